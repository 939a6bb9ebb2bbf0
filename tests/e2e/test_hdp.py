"""HDP (Human Delegation Provenance) end to end, with the official OpenAI SDK as the agent.

Tokens are issued by an independent implementation: the HDP reference middleware
hdp-langchain (PyPI) driven through its LangChain callback handler (root token on
the chain start, one signed hop per tool call); the agent sends them as the
`HDP-Token` header (base64url of the token JSON, as the reference TypeScript SDK's
encodeHeader does). Lumkey verifies them against the tenant's trusted issuers
(managed with lumkeyctl) and records the result in the audit event: verified
tokens show principal, session and chain; tampered, truncated, expired,
wrong-issuer, revoked-issuer and over-hop tokens are each reported with their
reason; a tool outside authorized_tools is a scope mismatch. None of them changes
the answer (200) unless a policy opted in to an `hdp` condition.
"""

import base64
import json
import threading
import time
import uuid

import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hdp_langchain import HdpMiddleware, HdpPrincipal, ScopePolicy, verify_chain
from hdp_langchain._crypto import sign_hop

from helpers import error_body, header, marker, mock_requests_with, wait_mock_request
from lkstack import CLAUDE_MODEL, MODEL, http


# ------------------------------------------------------------------ helpers

class Issuer:
    """An HDP issuer: an Ed25519 key pair and the kid its tokens name."""

    def __init__(self, kid):
        self.kid = kid
        self.priv = Ed25519PrivateKey.generate()
        self.seed = self.priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
        self.pub = self.priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def pub_b64url(self):
        return base64.urlsafe_b64encode(self.pub).rstrip(b"=").decode()

    @property
    def pub_pem(self):
        return self.priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def issue(self, tools=("web_search", "file_reader"), calls=("web_search",), max_hops=5,
              expires_in_ms=3_600_000, session=None, principal="alice@example.com"):
        """A token from the reference middleware, through its LangChain callback handler."""
        mw = HdpMiddleware(signing_key=self.seed, session_id=session or "sess-" + marker(),
                           principal=HdpPrincipal(id=principal, id_type="email", display_name="Alice"),
                           scope=ScopePolicy(intent="Summarise the Q1 sales figures",
                                             authorized_tools=list(tools) if tools is not None else None,
                                             max_hops=max_hops),
                           key_id=self.kid, expires_in_ms=expires_in_ms)
        handler = mw.get_callback_handler()
        run = uuid.uuid4()
        handler.on_chain_start({}, {"input": "q1"}, run_id=run)
        for tool in calls:
            handler.on_tool_start({"name": tool}, "q1 sales", run_id=uuid.uuid4(), parent_run_id=run)
        handler.on_chain_end({}, run_id=run)
        tok = mw.export_token()
        assert tok is not None and verify_chain(tok, self.pub).valid, "the reference implementation's own check"
        return tok


def encode(tok):
    return base64.urlsafe_b64encode(json.dumps(tok, separators=(",", ":")).encode()).rstrip(b"=").decode()


def ctl_json(stack, *args, check=True):
    out = stack.ctl(*args, "--format", "json", check=check)
    return json.loads(out.stdout) if out.stdout.strip() else None


def register(stack, tmp_path, issuer, name=None, pem=False):
    args = ["hdp", "issuers", "create", "--name", name or "iss-" + marker(), "--kid", issuer.kid]
    if pem:
        f = tmp_path / f"{issuer.kid}.pem"
        f.write_text(issuer.pub_pem)
        args += ["--public-key-file", str(f)]
    else:
        args += ["--public-key", issuer.pub_b64url]
    return ctl_json(stack, *args)


def chat(stack, headers=None, key=None, tools=None, content=None):
    """(answer, request id) of one chat completion through the OpenAI SDK."""
    client = stack.client(api_key=key)
    kw = {"tools": tools} if tools else {}
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": content or "hello " + marker()}],
        extra_headers=headers or {}, **kw)
    return raw.parse(), raw.headers.get("x-request-id", "")


def hdp_of(stack, rid):
    """The hdp object of the request's closing audit event (None when absent)."""
    row = stack.wait_closing_audit(rid)
    return row.get("hdp")


def admin_err(raw):
    """The admin API's error object {message, type, code[, param]}."""
    err = json.loads(raw)["error"]
    assert err["message"] and err["type"] and err["code"], err
    return err


def tool(name):
    return {"type": "function", "function": {"name": name, "description": "t",
                                             "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def trusted(stack, tmp_path_factory):
    iss = Issuer("e2e-key-" + marker())
    doc = register(stack, tmp_path_factory.mktemp("hdp"), iss, name="langchain-agents", pem=True)
    assert doc["kid"] == iss.kid and doc["public_key"] == iss.pub_b64url and doc["id"].startswith("hdpi_")
    return iss


# -------------------------------------------------------------------- tests

def test_issuers_admin_api_and_lumkeyctl(stack, tmp_path):
    iss = Issuer("k-" + marker())
    doc = register(stack, tmp_path, iss, name="billing-agents")
    assert doc["name"] == "billing-agents" and doc["revoked_at"] is None and doc["created_by"].startswith("adm_")
    listed = ctl_json(stack, "hdp", "issuers", "list")["data"]
    assert [d for d in listed if d["id"] == doc["id"]][0]["public_key"] == iss.pub_b64url

    # bad input: the API's own error shape, nothing stored
    h = {"authorization": f"Bearer {stack.admin_token}", "content-type": "application/json"}
    for body, code in (({"name": "x", "public_key": "not-a-key"}, "invalid_public_key"),
                       ({"name": "", "public_key": iss.pub_b64url}, "invalid_name"),
                       ({"name": "x", "public_key": iss.pub_b64url, "kid": "a\nb"}, "invalid_kid"),
                       ({"name": "x", "public_key": iss.pub_b64url, "color": "red"}, "unknown_field")):
        st, _, raw = http("POST", stack.admin_base + "/admin/v1/hdp/issuers", json.dumps(body).encode(), h)
        assert st == 400, (body, st)
        err = admin_err(raw)
        assert err["code"] == code
        if code.startswith("invalid_"):
            assert err["param"] == code[len("invalid_"):]
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/hdp/issuers", b"{", h)
    assert st == 400 and admin_err(raw)["code"] == "invalid_json"
    # one active issuer per kid
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/hdp/issuers",
                      json.dumps({"name": "dup", "public_key": iss.pub_b64url, "kid": iss.kid}).encode(), h)
    assert st == 409 and admin_err(raw)["code"] == "already_exists"
    # lumkeyctl refuses a file that holds no key before any call
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    out = stack.ctl("hdp", "issuers", "create", "--name", "x", "--public-key-file", str(bad), check=False)
    assert out.returncode != 0 and b"not a PEM Ed25519 public key" in out.stderr

    # auditors may list, not create
    st, _, tdoc = http("POST", stack.admin_base + "/admin/v1/tokens",
                       json.dumps({"name": "aud-" + marker(), "role": "auditor"}).encode(), h)
    assert st == 201
    ah = {"authorization": f"Bearer {json.loads(tdoc)['token']}", "content-type": "application/json"}
    st, _, _ = http("GET", stack.admin_base + "/admin/v1/hdp/issuers", None, ah)
    assert st == 200
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/hdp/issuers",
                      json.dumps({"name": "y", "public_key": iss.pub_b64url}).encode(), ah)
    assert st == 403 and admin_err(raw)["code"] == "insufficient_role"

    # revoke: kept, marked, audited as an admin event
    rev = ctl_json(stack, "hdp", "issuers", "revoke", doc["id"])
    assert rev["id"] == doc["id"] and rev["revoked_at"]
    with stack.db().cursor() as cur:
        cur.execute("SELECT kind, decision, http_status, rule_id FROM audit_events "
                    "WHERE kind LIKE 'admin.hdp.issuers.%%' AND rule_id = %s ORDER BY seq", (doc["id"],))
        kinds = [(r["kind"], r["http_status"]) for r in cur.fetchall()]
    assert ("admin.hdp.issuers.create", 201) in kinds and ("admin.hdp.issuers.revoke", 200) in kinds
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/hdp/issuers/hdpi_doesnotexist/revoke", None, h)
    assert st == 404 and admin_err(raw)["code"] == "not_found"


def test_reference_token_verifies_and_is_audited(stack, trusted):
    tok = trusted.issue(calls=("web_search", "file_reader"))
    m = marker()
    ans, rid = chat(stack, {"HDP-Token": encode(tok)}, tools=[tool("web_search")], content=m)
    assert ans.choices[0].message.content is not None
    # the token is Lumkey's to read: it is not forwarded to the provider
    assert header(wait_mock_request(stack, m), "hdp-token") is None
    h = hdp_of(stack, rid)
    assert h is not None, "no hdp in the audit event"
    assert h["verified"] is True and h["reason"] == "ok", h
    assert h["principal"] == {"id": "alice@example.com", "id_type": "email"}
    assert h["session"] == tok["header"]["session_id"] and h["token_id"] == tok["header"]["token_id"]
    assert h["issuer"] == {"kid": trusted.kid, "name": "langchain-agents"}
    assert h["hops"] == 2 and [c["agent_id"] for c in h["chain"]] == ["web_search", "file_reader"]
    assert h["scope"]["authorized_tools"] == ["web_search", "file_reader"] and h["scope"]["max_hops"] == 5
    assert h["scope_mismatch"] is False and h["mismatches"] == []
    # no signature material is recorded
    text = json.dumps(h)
    assert tok["signature"]["value"] not in text and "hop_signature" not in text

    # the same through the admin API's audit query (lumkeyctl audit query)
    out = json.loads(stack.ctl("audit", "query", "--key", stack.key_id, "--kind", "request.completed", "--limit",
                               "1000", "--format", "json").stdout)
    mine = [e for e in out["events"] if e.get("request_id") == rid and e.get("hdp")]
    assert mine, "audit query does not show the request's hdp"
    q = mine[-1]["hdp"] if isinstance(mine[-1]["hdp"], dict) else json.loads(mine[-1]["hdp"])
    assert q["verified"] is True and q["principal"]["id"] == "alice@example.com"

    # the legacy X-HDP-Token header name of the draft's earlier revision
    _, rid = chat(stack, {"X-HDP-Token": encode(trusted.issue())})
    assert hdp_of(stack, rid)["verified"] is True


def tamper_intent(tok):
    tok["scope"]["intent"] = "Export every customer record"


def tamper_tools(tok):
    tok["scope"]["authorized_tools"].append("shell")


def tamper_hop(tok):
    tok["chain"][0]["action_summary"] = "something else"


def drop_first_hop(tok):
    del tok["chain"][0]


def test_bad_tokens_are_reported_and_never_block(stack, trusted, tmp_path):
    cases = []
    for fn, reason in ((tamper_intent, "bad_signature"), (tamper_tools, "bad_signature"),
                       (tamper_hop, "chain_broken"), (drop_first_hop, "chain_broken")):
        tok = trusted.issue(calls=("web_search", "file_reader"))
        fn(tok)
        cases.append((fn.__name__, encode(tok), reason))
    whole = encode(trusted.issue())
    cases.append(("truncated", whole[: len(whole) // 2], "truncated"))
    cases.append(("expired", encode(trusted.issue(expires_in_ms=1)), "expired"))
    stranger = Issuer("stranger-" + marker())
    cases.append(("unknown issuer", encode(stranger.issue()), "unknown_issuer"))
    impostor = Issuer(trusted.kid)  # claims the trusted kid, signs with its own key
    cases.append(("wrong key", encode(impostor.issue()), "bad_signature"))
    # over-hop: scope max_hops 1, a second hop signed with the reference signer (the middleware itself
    # refuses to record it)
    tok = trusted.issue(max_hops=1, calls=("web_search",))
    hop = {"seq": 2, "agent_id": "rogue", "agent_type": "sub-agent", "timestamp": tok["chain"][0]["timestamp"] + 1,
           "action_summary": "one hop too many", "parent_hop": 1}
    hop["hop_signature"] = sign_hop([*tok["chain"], dict(hop)], tok["signature"]["value"], trusted.seed)
    tok["chain"].append(hop)
    cases.append(("over-hop", encode(tok), "too_many_hops"))
    # an issuer revoked after issuing
    gone = Issuer("gone-" + marker())
    gdoc = register(stack, tmp_path, gone)
    gtok = encode(gone.issue())
    ctl_json(stack, "hdp", "issuers", "revoke", gdoc["id"])
    cases.append(("revoked issuer", gtok, "issuer_revoked"))
    # garbage
    for name, value in (("garbage", "not a token"), ("empty json", "e30"), ("raw json array", "[1,2]"),
                        ("deep", "[" * 200 + "]" * 200), ("percent", "%%%%~~~~"),
                        ("long", "A" * 20000)):
        cases.append((name, value, "malformed"))

    time.sleep(0.01)  # the 1 ms token is past its expiry
    for name, value, reason in cases:
        ans, rid = chat(stack, {"HDP-Token": value})
        assert ans.choices[0].message.content is not None, name
        h = hdp_of(stack, rid)
        assert h is not None and h["present"] is True, name
        assert h["verified"] is False and h["reason"] == reason, (name, h.get("reason"), h.get("detail"))
        if reason in ("bad_signature", "chain_broken", "too_many_hops", "expired", "issuer_revoked"):
            assert h["principal"]["id"] == "alice@example.com", name  # who the token claims, recorded as such
    # the workers survived all of it (also checked by the autouse health check)
    assert stack.readiness()[0] == 200


def test_requests_without_a_token_record_nothing(stack):
    _, rid = chat(stack)
    assert hdp_of(stack, rid) is None


def test_tool_outside_authorized_tools_is_a_scope_mismatch(stack, trusted):
    tok = trusted.issue(tools=("web_search",), calls=("web_search",))
    ans, rid = chat(stack, {"HDP-Token": encode(tok)}, tools=[tool("web_search"), tool("delete_database")])
    assert ans.choices[0].message.content is not None
    h = hdp_of(stack, rid)
    assert h["verified"] is True and h["scope_mismatch"] is True
    assert h["mismatches"] == [{"kind": "tool_definition", "tool": "delete_database"}]
    # a tool call in the conversation outside the scope
    client = stack.client()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, extra_headers={"HDP-Token": encode(tok)},
        messages=[{"role": "user", "content": "go"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "done"}])
    assert raw.parse().choices[0].message.content is not None
    h = hdp_of(stack, raw.headers.get("x-request-id"))
    assert h["mismatches"] == [{"kind": "tool_call", "tool": "shell"}]


def test_token_by_reference(stack, trusted):
    tok = trusted.issue()
    _, rid = chat(stack, {"HDP-Token": encode(tok)})
    assert hdp_of(stack, rid)["verified"] is True
    _, rid = chat(stack, {"HDP-Token-Ref": tok["header"]["token_id"]})
    h = hdp_of(stack, rid)
    assert h["verified"] is True and h["by_ref"] is True and h["token_id"] == tok["header"]["token_id"]
    _, rid = chat(stack, {"HDP-Token-Ref": str(uuid.uuid4())})
    h = hdp_of(stack, rid)
    assert h["verified"] is False and h["reason"] == "unresolved_ref"


def test_policies_may_opt_in(stack, trusted, tmp_path):
    doc = {"rules": [
        {"id": "hdp-scope", "when": {"hdp": {"scope_mismatch": True}}, "action": "block",
         "message": "This tool is outside the delegated scope."},
        {"id": "hdp-unverified", "when": {"hdp": {"present": True, "verified": False}}, "action": "block",
         "message": "The delegation token did not verify."}]}
    f = tmp_path / "hdp-policy.json"
    f.write_text(json.dumps(doc))
    pol = ctl_json(stack, "policy", "create", "--name", "hdp-" + marker(), "--file", str(f))
    key = ctl_json(stack, "keys", "create", "--name", "hdp-" + marker(), "--policy", pol["id"])

    # verified, in scope: allowed
    tok = trusted.issue(tools=("web_search",), calls=("web_search",))
    ans, rid = chat(stack, {"HDP-Token": encode(tok)}, key=key["key"], tools=[tool("web_search")])
    assert ans.choices[0].message.content is not None
    # no token at all: the rules do not apply
    ans, _ = chat(stack, key=key["key"])
    assert ans.choices[0].message.content is not None
    # a scope mismatch: blocked in OpenAI's error shape, the reason recorded
    with pytest.raises(openai.PermissionDeniedError) as ei:
        chat(stack, {"HDP-Token": encode(tok)}, key=key["key"], tools=[tool("delete_database")])
    err = error_body(ei.value.response.content)
    assert err["code"] == "blocked_by_policy" and err["message"] == "This tool is outside the delegated scope."
    row = stack.wait_closing_audit(ei.value.response.headers.get("x-request-id"))
    assert row["decision"] == "block" and row["rule_id"] == "hdp-scope" and row["hdp"]["scope_mismatch"] is True
    # a forged token: blocked by the second rule
    bad = trusted.issue()
    bad["scope"]["intent"] = "anything"
    with pytest.raises(openai.PermissionDeniedError) as ei:
        chat(stack, {"HDP-Token": encode(bad)}, key=key["key"])
    assert error_body(ei.value.response.content)["message"] == "The delegation token did not verify."
    # the same forged token with the stack's key (no such policy): recorded only
    ans, rid = chat(stack, {"HDP-Token": encode(bad)})
    assert ans.choices[0].message.content is not None and hdp_of(stack, rid)["reason"] == "bad_signature"


def test_opt_in_hold_on_scope_mismatch_waits_for_a_human(stack, trusted, tmp_path):
    """The draft's example opt-in: hold (not block) a request whose tools leave the delegated scope."""
    f = tmp_path / "hdp-hold.json"
    f.write_text(json.dumps({"rules": [{"id": "hdp-scope-hold", "when": {"hdp": {"scope_mismatch": True}},
                                        "action": "hold", "message": "Outside the delegated scope."}]}))
    pol = ctl_json(stack, "policy", "create", "--name", "hdp-hold-" + marker(), "--file", str(f))
    key = ctl_json(stack, "keys", "create", "--name", "hdp-hold-" + marker(), "--policy", pol["id"])
    tok = trusted.issue(tools=("web_search",), calls=("web_search",))
    m = marker()
    out = {}

    def run():
        try:
            out["value"] = chat(stack, {"HDP-Token": encode(tok)}, key=key["key"], tools=[tool("shell")], content=m)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 15
    hold = None
    while hold is None and time.monotonic() < deadline:
        pending = [h for h in ctl_json(stack, "holds", "list")["data"]
                   if h["status"] == "pending" and h.get("key_id") == key["id"]]
        hold = pending[0] if pending else None
        time.sleep(0.1)
    assert hold is not None, "no pending hold for the out-of-scope request"
    assert hold["rule_id"] == "hdp-scope-hold"
    assert t.is_alive() and not mock_requests_with(stack, m), "a held request went on"
    stack.ctl("holds", "approve", hold["id"], "--reason", "checked with alice")
    t.join(30)
    assert "error" not in out, out.get("error")
    ans, rid = out["value"]
    assert ans.choices[0].message.content is not None
    row = stack.wait_closing_audit(rid)
    assert row["decision"] == "approved" and row["hdp"]["scope_mismatch"] is True
    assert row["hdp"]["mismatches"] == [{"kind": "tool_definition", "tool": "shell"}]


def test_anthropic_messages_with_an_hdp_token(stack, trusted):
    """The same verification on Anthropic's Messages API (official Anthropic SDK): tool_use in the
    conversation and tools offered, compared with the token's scope."""
    tok = trusted.issue(tools=("web_search",), calls=("web_search",))
    raw = stack.anthropic().messages.with_raw_response.create(
        model=CLAUDE_MODEL, max_tokens=64, extra_headers={"HDP-Token": encode(tok)},
        tools=[{"name": "web_search", "input_schema": {"type": "object"}},
               {"name": "send_email", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "find it"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "read_file",
                                                     "input": {"path": "/tmp/x"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "ok"}]}])
    assert raw.parse().type == "message"
    h = hdp_of(stack, raw.headers.get("x-request-id"))
    assert h["verified"] is True and h["principal"]["id"] == "alice@example.com"
    assert h["mismatches"] == [{"kind": "tool_definition", "tool": "send_email"},
                               {"kind": "tool_call", "tool": "read_file"}]


def test_issuers_and_references_are_per_tenant(stack, trusted):
    """Tenant B neither sees tenant A's issuers nor trusts them, and cannot resolve A's token references."""
    tenant = "t" + marker()[1:13].lower()
    p = stack.run_tool("vault", ["--bootstrap-admin", "--tenant", tenant])
    lines = p.stdout.decode().strip().splitlines()
    b_token = lines[-1].strip() if lines else ""
    assert b_token.startswith("lk_adm_"), "bootstrap did not print an admin token"
    bh = {"authorization": f"Bearer {b_token}", "content-type": "application/json"}
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/providers", json.dumps({
        "name": "mock-b", "kind": "openai-compatible", "base_url": stack.mock_base + "/v1",
        "api_key": stack.provider_credential, "models": [MODEL], "allow_private": True}).encode(), bh)
    assert st == 201, stack.redact(raw[:300])
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/keys", json.dumps({"name": "b-" + marker()}).encode(), bh)
    assert st == 201
    b_key = json.loads(raw)["key"]
    st, _, raw = http("GET", stack.admin_base + "/admin/v1/hdp/issuers", None, bh)
    assert st == 200 and json.loads(raw)["data"] == [], "tenant B sees tenant A's issuers"

    tok = trusted.issue()
    _, rid = chat(stack, {"HDP-Token": encode(tok)})  # tenant A: verified, remembered for references
    assert hdp_of(stack, rid)["verified"] is True
    _, rid = chat(stack, {"HDP-Token": encode(tok)}, key=b_key)  # tenant B: A's issuer is not B's
    h = hdp_of(stack, rid)
    assert h["verified"] is False and h["reason"] == "unknown_issuer"
    _, rid = chat(stack, {"HDP-Token-Ref": tok["header"]["token_id"]}, key=b_key)
    assert hdp_of(stack, rid)["reason"] == "unresolved_ref"
    # B trusts its own copy of the key: then it verifies for B too
    st, _, raw = http("POST", stack.admin_base + "/admin/v1/hdp/issuers", json.dumps(
        {"name": "shared-agents", "kid": trusted.kid, "public_key": trusted.pub.hex()}).encode(), bh)
    assert st == 201, raw
    _, rid = chat(stack, {"HDP-Token": encode(tok)}, key=b_key)
    h = hdp_of(stack, rid)
    assert h["verified"] is True and h["issuer"]["name"] == "shared-agents"
