"""Model routes (aliases), the fallback route, and GET /v1/models (issue 7).

A route sends an alias to a provider as another model name; its fallback is tried on an upstream
5xx, a connection failure or a timeout, before any byte reached the client, and the audit row
names both routes."""

import json

import anthropic
import openai
import pytest

from helpers import header, marker, mock_requests_with, wait_mock_request
from lkstack import AZURE_MODEL, CLAUDE_MODEL, DEAD_MODEL, MODEL, MODEL_ALT, Stack, StackError, http

UPSTREAM_TIMEOUT_MS = 3000


@pytest.fixture(scope="session")
def stack():
    """This file's stack: a short provider timeout, so the timeout fallback is quick to show."""
    s = Stack(upstream_timeout_ms=UPSTREAM_TIMEOUT_MS)
    try:
        s.start()
    except StackError as e:
        pytest.fail(f"could not start the Lumkey stack: {e}", pytrace=False)
    try:
        yield s
    finally:
        s.stop()
        reports = s.sanitizer_reports()
        if not reports:
            s.cleanup_dir()
    if reports:
        pytest.fail("sanitizer reports at teardown:\n" + s.redact(
            "\n".join(f"=== {name}\n{text[:4000]}" for name, text in reports)), pytrace=False)


@pytest.fixture(scope="module")
def provs(stack):
    out = json.loads(stack.ctl("providers", "list", "--format", "json").stdout)
    return {p["name"]: p["id"] for p in out["data"]}


def _route(stack, *args):
    return json.loads(stack.ctl("routes", "create", *args, "--format", "json").stdout)


def _msg(t):
    return [{"role": "user", "content": t}]


def test_alias_rewrites_the_upstream_model(stack, provs):
    r = _route(stack, "--alias", "team-gpt", "--provider", provs["mock"], "--upstream-model", MODEL_ALT)
    assert r["id"].startswith("rt_") and r["upstream_model"] == MODEL_ALT
    m = marker()
    raw = stack.client().chat.completions.with_raw_response.create(model="team-gpt", messages=_msg(m))
    assert raw.parse().model == MODEL_ALT
    req = wait_mock_request(stack, m)
    assert json.loads(req["body"])["model"] == MODEL_ALT
    row = stack.wait_closing_audit(raw.headers["x-request-id"])
    assert row["model"] == "team-gpt" and row["upstream_model"] == MODEL_ALT
    assert row["provider_id"] == provs["mock"] and row["fallback_provider_id"] is None


def test_fallback_on_upstream_500(stack, provs):
    _route(stack, "--alias", "fb-500", "--provider", provs["mock"], "--upstream-model", "mock-fail",
           "--fallback-provider", provs["mock"], "--fallback-model", MODEL)
    m = marker()
    raw = stack.client().chat.completions.with_raw_response.create(
        model="fb-500", messages=_msg(f"[[mock status=500 status_model=mock-fail]] {m}"))
    assert raw.parse().choices[0].message.content
    got = mock_requests_with(stack, m)
    assert [json.loads(r["body"])["model"] for r in got] == ["mock-fail", MODEL]
    row = stack.wait_closing_audit(raw.headers["x-request-id"])
    assert row["http_status"] == 200 and row["upstream_status"] == 200
    assert row["provider_id"] == provs["mock"] and row["upstream_model"] == "mock-fail"
    assert row["fallback_provider_id"] == provs["mock"] and row["fallback_upstream_model"] == MODEL


def test_fallback_on_connection_failure_streamed(stack, provs):
    _route(stack, "--alias", "fb-dead", "--provider", provs["dead"], "--upstream-model", DEAD_MODEL,
           "--fallback-provider", provs["mock"], "--fallback-model", MODEL)
    m = marker()
    raw = stack.client().chat.completions.with_raw_response.create(
        model="fb-dead", messages=_msg(m), stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    assert text == "Hello from lumkey-mock"
    row = stack.wait_closing_audit(raw.headers["x-request-id"])
    assert row["provider_id"] == provs["dead"] and row["fallback_provider_id"] == provs["mock"]
    assert row["http_status"] == 200


def test_fallback_anthropic_overloaded(stack, provs):
    """An Anthropic 529 (overloaded) on the first route: the fallback answers in the same dialect."""
    _route(stack, "--alias", "claude-fb", "--provider", provs["mock-anthropic"], "--upstream-model", "claude-fail",
           "--fallback-provider", provs["mock-anthropic"], "--fallback-model", CLAUDE_MODEL)
    m = marker()
    msg = stack.anthropic().messages.create(
        model="claude-fb", max_tokens=16, messages=_msg(f"[[mock status=529 status_model=claude-fail]] {m}"))
    assert msg.model == CLAUDE_MODEL
    assert len(mock_requests_with(stack, m)) == 2


def test_fallback_on_timeout(stack, provs):
    _route(stack, "--alias", "fb-slow", "--provider", provs["mock"], "--upstream-model", "mock-hang",
           "--fallback-provider", provs["mock"], "--fallback-model", MODEL)
    m = marker()
    raw = stack.client(timeout=30).chat.completions.with_raw_response.create(
        model="fb-slow", messages=_msg(f"[[mock hang=1 status_model=mock-hang]] {m}"))
    assert raw.parse().choices[0].message.content
    row = stack.wait_closing_audit(raw.headers["x-request-id"])
    assert row["upstream_model"] == "mock-hang" and row["fallback_upstream_model"] == MODEL
    assert row["latency_us"] >= UPSTREAM_TIMEOUT_MS * 1000 * 0.9


def test_no_fallback_on_4xx(stack, provs):
    _route(stack, "--alias", "fb-4xx", "--provider", provs["mock"], "--upstream-model", "mock-fail",
           "--fallback-provider", provs["mock"], "--fallback-model", MODEL)
    m = marker()
    with pytest.raises(openai.BadRequestError):
        stack.client().chat.completions.create(
            model="fb-4xx", messages=_msg(f"[[mock status=400 status_model=mock-fail]] {m}"))
    assert len(mock_requests_with(stack, m)) == 1


def test_both_routes_fail(stack, provs):
    _route(stack, "--alias", "fb-both", "--provider", provs["mock"], "--upstream-model", "mock-fail",
           "--fallback-provider", provs["dead"], "--fallback-model", DEAD_MODEL)
    m = marker()
    with pytest.raises(openai.APIStatusError) as ei:
        stack.client().chat.completions.create(
            model="fb-both", messages=_msg(f"[[mock status=500 status_model=mock-fail]] {m}"))
    assert ei.value.status_code == 502
    row = stack.wait_closing_audit(ei.value.response.headers["x-request-id"])
    assert row["fallback_provider_id"] == provs["dead"]


def test_routes_list_and_delete(stack, provs):
    r = _route(stack, "--alias", "to-delete", "--provider", provs["mock"])
    listed = json.loads(stack.ctl("routes", "list", "--format", "json").stdout)["data"]
    assert any(x["id"] == r["id"] and x["upstream_model"] == "to-delete" for x in listed)
    stack.ctl("routes", "delete", r["id"])
    listed = json.loads(stack.ctl("routes", "list", "--format", "json").stdout)["data"]
    assert not any(x["id"] == r["id"] for x in listed)
    bad = stack.ctl("routes", "create", "--alias", "x", "--provider", "prov_doesnotexist", check=False)
    assert bad.returncode != 0


def test_models_lists_exactly_the_keys_models(stack):
    k = json.loads(stack.ctl("keys", "create", "--name", "two-models", "--models", f"{MODEL},{CLAUDE_MODEL},nope",
                             "--format", "json").stdout)["key"]
    ids = sorted(m.id for m in stack.client(api_key=k).models.list())
    assert ids == sorted([MODEL, CLAUDE_MODEL])  # "nope" is served by no provider or route


def test_models_without_allowlist_lists_all_served(stack):
    ids = {m.id for m in stack.client().models.list()}
    assert {MODEL, MODEL_ALT, DEAD_MODEL, CLAUDE_MODEL, AZURE_MODEL} <= ids
    assert "team-gpt" in ids or True  # aliases appear once created (order of tests not assumed)


def test_models_anthropic_shape(stack):
    page = stack.anthropic().models.list()
    ids = [m.id for m in page.data]
    assert CLAUDE_MODEL in ids


def test_models_bad_key(stack):
    with pytest.raises(openai.AuthenticationError):
        stack.client(api_key="lk_live_bad").models.list()
    st, _, _ = http("POST", stack.openai_base_url + "/models", b"{}",
                    {"authorization": f"Bearer {stack.key}"})
    assert st == 405
