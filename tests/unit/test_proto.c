/*  test_proto - the edge <-> worker codec: round trips, envelopes, malformed input. */
#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "lk_proto.h"
#include "lk_test.h"

static const lk_msg_type_t ALL_TYPES[] = {
    LK_MSG_PING,       LK_MSG_PONG,         LK_MSG_ERROR,         LK_MSG_KEY_HASH,       LK_MSG_KEY_HASH_REP,
    LK_MSG_CRED_GET,   LK_MSG_CRED_GET_REP, LK_MSG_ADMIN_AUTH,    LK_MSG_ADMIN_AUTH_REP, LK_MSG_ADMIN_REQ,
    LK_MSG_ADMIN_REP,  LK_MSG_DECIDE,       LK_MSG_DECIDE_REP,    LK_MSG_HOLD,           LK_MSG_HOLD_REP,
    LK_MSG_AUDIT,      LK_MSG_AUDIT_REP,    LK_MSG_POLICY_GET,    LK_MSG_POLICY_GET_REP, LK_MSG_SETTLE,
    LK_MSG_SETTLE_REP, LK_MSG_HOLD_WAIT,    LK_MSG_HOLD_WAIT_REP,
};
#define NTYPES (sizeof ALL_TYPES / sizeof ALL_TYPES[0])

#define S(lit) LK_STR_LIT(lit)

static int str_same(lk_str_t a, lk_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}
#define CHECK_S(field) LK_CHECK(str_same(a->field, b->field))
#define CHECK_I(field) LK_CHECK(a->field == b->field)

/* Every field set to a distinct, non-default value. */
static void fill_all(lk_msg_t *m, lk_msg_type_t type)
{
    memset(m, 0, sizeof *m);
    m->env.version = LK_PROTO_VERSION;
    m->env.type = type;
    m->env.rid = S("req_0123456789abcdef01234567");
    m->env.call_id = 0xFEDCBA9876543210ull;
    m->env.deadline_ms = 1767225600123;
    switch (type) {
    case LK_MSG_PING:
    case LK_MSG_PONG:
        m->u.ping.service = S("policy");
        break;
    case LK_MSG_ERROR:
        m->u.error.status = LK_ST_UNAVAILABLE;
        m->u.error.message = S("the vault is sealed");
        break;
    case LK_MSG_KEY_HASH:
        m->u.key_hash.key = S("lk_live_AAAAAAAAAAAAAAAAsecretsecretsecretsecretsecretsecretsec000000");
        break;
    case LK_MSG_KEY_HASH_REP:
        for (int i = 0; i < LK_PROTO_HASH_LEN; i++)
            m->u.key_hash_rep.hash[i] = (uint8_t)(i * 7 + 1);
        break;
    case LK_MSG_CRED_GET:
        m->u.cred_get.tenant = S("ten_1");
        m->u.cred_get.cred_id = S("cred_42");
        break;
    case LK_MSG_CRED_GET_REP:
        m->u.cred_get_rep.secret = S("sk-provider-secret-\x00-with-nul");
        break;
    case LK_MSG_ADMIN_AUTH:
        m->u.admin_auth.token = S("lk_adm_token");
        break;
    case LK_MSG_ADMIN_AUTH_REP:
        m->u.admin_auth_rep.tenant = S("ten_1");
        m->u.admin_auth_rep.role = S("approver");
        m->u.admin_auth_rep.token_id = S("tok_9");
        break;
    case LK_MSG_ADMIN_REQ:
        m->u.admin_req.op = S("keys.update");
        m->u.admin_req.tenant = S("ten_1");
        m->u.admin_req.actor = S("tok_9");
        m->u.admin_req.role = S("admin");
        m->u.admin_req.object_id = S("key_abc");
        m->u.admin_req.json = S("{\"name\":\"ci\"}");
        break;
    case LK_MSG_ADMIN_REP:
        m->u.admin_rep.status = LK_ST_CONFLICT;
        m->u.admin_rep.json = S("{\"error\":\"exists\"}");
        break;
    case LK_MSG_DECIDE:
        for (int i = 0; i < LK_PROTO_HASH_LEN; i++)
            m->u.decide.key_hash[i] = (uint8_t)(255 - i);
        m->u.decide.key_id = S("key_0123456789abcdef");
        m->u.decide.endpoint = S("chat.completions");
        m->u.decide.model = S("gpt-4o");
        m->u.decide.stream = 1;
        m->u.decide.source_ip = S("10.0.0.7");
        m->u.decide.body = S("{\"model\":\"gpt-4o\",\"messages\":[]}");
        m->u.decide.headers = S("x-agent-run: prod-7\n");
        break;
    case LK_MSG_DECIDE_REP:
        m->u.decide_rep.status = LK_ST_OK;
        m->u.decide_rep.error_code = S("none");
        m->u.decide_rep.message = S("ok");
        m->u.decide_rep.decision = LK_DECISION_HOLD;
        m->u.decide_rep.tenant = S("ten_1");
        m->u.decide_rep.key_id = S("key_1");
        m->u.decide_rep.user = S("alice");
        m->u.decide_rep.provider_id = S("prov_1");
        m->u.decide_rep.provider_kind = S("openai");
        m->u.decide_rep.base_url = S("https://api.openai.com/v1");
        m->u.decide_rep.cred_id = S("cred_1");
        m->u.decide_rep.upstream_model = S("gpt-4o-2024-08-06");
        m->u.decide_rep.provider_id2 = S("prov_2");
        m->u.decide_rep.provider_kind2 = S("azure");
        m->u.decide_rep.base_url2 = S("https://x.openai.azure.com");
        m->u.decide_rep.cred_id2 = S("cred_2");
        m->u.decide_rep.upstream_model2 = S("gpt4o-deployment");
        m->u.decide_rep.models = S("[\"gpt-4o\",\"claude-x\"]");
        m->u.decide_rep.policy_id = S("pol_1");
        m->u.decide_rep.policy_version = 12;
        m->u.decide_rep.rule_id = S("rule_7");
        m->u.decide_rep.body = S("{\"model\":\"gpt-4o\"}");
        m->u.decide_rep.would = LK_DECISION_BLOCK;
        m->u.decide_rep.answer_rules = 1;
        m->u.decide_rep.agent = S("billing-bot");
        m->u.decide_rep.team = S("finance");
        m->u.decide_rep.reserved = 1;
        m->u.decide_rep.est_microusd = 12345;
        m->u.decide_rep.priced = 1;
        m->u.decide_rep.price_in = 2500000;
        m->u.decide_rep.price_out = 10000000;
        m->u.decide_rep.anomaly =
            S("{\"score\":0.91,\"reasons\":[{\"k\":\"new_tool\",\"c\":2.1}],\"cold\":false}");
        m->u.decide_rep.hdp = S("{\"ok\":true,\"principal\":\"alice\"}");
        break;
    case LK_MSG_POLICY_GET:
        m->u.policy_get.tenant = S("default");
        m->u.policy_get.policy_id = S("pol_1");
        m->u.policy_get.policy_version = 3;
        break;
    case LK_MSG_POLICY_GET_REP:
        m->u.policy_get_rep.document = S("{\"rules\":[]}");
        break;
    case LK_MSG_SETTLE:
        m->u.settle.tenant = S("default");
        m->u.settle.prompt_tokens = 12;
        m->u.settle.completion_tokens = -1;
        break;
    case LK_MSG_SETTLE_REP:
        m->u.settle_rep.microusd = 42;
        break;
    case LK_MSG_HOLD:
        m->u.hold.tenant = S("ten_1");
        m->u.hold.key_id = S("key_1");
        for (int i = 0; i < LK_PROTO_DIGEST_LEN; i++)
            m->u.hold.digest[i] = (uint8_t)(i ^ 0x5a);
        m->u.hold.policy_id = S("pol_1");
        m->u.hold.policy_version = 3;
        m->u.hold.rule_id = S("rule_2");
        m->u.hold.reason = S("tool call needs approval");
        m->u.hold.timeout_ms = 300000;
        m->u.hold.kind = S("answer");
        m->u.hold.user = S("alice");
        m->u.hold.agent = S("agent_7");
        m->u.hold.model = S("gpt-x");
        m->u.hold.tool = S("shell");
        m->u.hold.excerpt = S("rm -rf [redacted]");
        break;
    case LK_MSG_HOLD_REP:
        m->u.hold_rep.outcome = LK_HOLD_TIMED_OUT;
        m->u.hold_rep.hold_id = S("hold_1");
        m->u.hold_rep.approver = S("bob");
        m->u.hold_rep.reason = S("no answer");
        m->u.hold_rep.expires_ms = 1790000000123;
        break;
    case LK_MSG_HOLD_WAIT:
        m->u.hold_wait.tenant = S("ten_1");
        m->u.hold_wait.hold_id = S("hold_2");
        break;
    case LK_MSG_HOLD_WAIT_REP:
        m->u.hold_rep.outcome = LK_HOLD_PENDING;
        m->u.hold_rep.hold_id = S("hold_2");
        m->u.hold_rep.approver = S("slack:U1");
        m->u.hold_rep.reason = S("ok");
        m->u.hold_rep.expires_ms = 1790000000999;
        break;
    case LK_MSG_AUDIT: {
        lk_audit_t *a = &m->u.audit;
        a->event_id = S("5f0c6b9e-1f6d-8a3b-9c1d-0123456789ab");
        a->kind = S("request.completed");
        a->time_ms = 1767225600999;
        a->tenant = S("ten_1");
        a->key_id = S("key_1");
        a->user = S("alice");
        a->source_ip = S("::1");
        a->endpoint = S("chat.completions");
        a->provider_id = S("prov_1");
        a->model = S("gpt-4o");
        a->upstream_model = S("gpt-4o-2024-08-06");
        a->decision = S("allow");
        a->policy_id = S("pol_1");
        a->policy_version = 5;
        a->rule_id = S("rule_1");
        a->http_status = 200;
        a->upstream_status = 201;
        a->latency_us = 123456789;
        a->prompt_tokens = -1;
        a->completion_tokens = 42;
        a->total_tokens = INT64_MAX;
        a->error_code = S("upstream_timeout");
        a->trace_id = S("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        a->stream = 1;
        a->agent = S("OpenAI/Python 1.0");
        a->approver = S("bob");
        a->cost_micros = 1234;
        a->request_sha = S("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        a->answer_sha = S("0000c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        a->request_body = S("{\"model\":\"m\"}");
        a->answer_body = S("{}");
        a->provider_id2 = S("prov_2");
        a->upstream_model2 = S("gpt4o-deployment");
        a->anomaly = S("{\"score\":0.12,\"reasons\":[]}");
        a->hdp = S("{\"ok\":false}");
        break;
    }
    case LK_MSG_AUDIT_REP:
        m->u.audit_rep.seq = INT64_MIN;
        m->u.audit_rep.fail_open = 1;
        break;
    default:
        break;
    }
}

static void check_same(const lk_msg_t *x, const lk_msg_t *y)
{
    LK_CHECK(x->env.version == y->env.version);
    LK_CHECK(x->env.type == y->env.type);
    LK_CHECK(str_same(x->env.rid, y->env.rid));
    LK_CHECK(x->env.call_id == y->env.call_id);
    LK_CHECK(x->env.deadline_ms == y->env.deadline_ms);
    switch (x->env.type) {
    case LK_MSG_PING:
    case LK_MSG_PONG: {
        const lk_ping_t *a = &x->u.ping, *b = &y->u.ping;
        CHECK_S(service);
        break;
    }
    case LK_MSG_ERROR: {
        const lk_error_t *a = &x->u.error, *b = &y->u.error;
        CHECK_I(status);
        CHECK_S(message);
        break;
    }
    case LK_MSG_KEY_HASH: {
        const lk_key_hash_t *a = &x->u.key_hash, *b = &y->u.key_hash;
        CHECK_S(key);
        break;
    }
    case LK_MSG_KEY_HASH_REP:
        LK_CHECK(memcmp(x->u.key_hash_rep.hash, y->u.key_hash_rep.hash, LK_PROTO_HASH_LEN) == 0);
        break;
    case LK_MSG_CRED_GET: {
        const lk_cred_get_t *a = &x->u.cred_get, *b = &y->u.cred_get;
        CHECK_S(tenant);
        CHECK_S(cred_id);
        break;
    }
    case LK_MSG_CRED_GET_REP: {
        const lk_cred_get_rep_t *a = &x->u.cred_get_rep, *b = &y->u.cred_get_rep;
        CHECK_S(secret);
        break;
    }
    case LK_MSG_ADMIN_AUTH: {
        const lk_admin_auth_t *a = &x->u.admin_auth, *b = &y->u.admin_auth;
        CHECK_S(token);
        break;
    }
    case LK_MSG_ADMIN_AUTH_REP: {
        const lk_admin_auth_rep_t *a = &x->u.admin_auth_rep, *b = &y->u.admin_auth_rep;
        CHECK_S(tenant);
        CHECK_S(role);
        CHECK_S(token_id);
        break;
    }
    case LK_MSG_ADMIN_REQ: {
        const lk_admin_req_t *a = &x->u.admin_req, *b = &y->u.admin_req;
        CHECK_S(op);
        CHECK_S(tenant);
        CHECK_S(actor);
        CHECK_S(role);
        CHECK_S(object_id);
        CHECK_S(json);
        break;
    }
    case LK_MSG_ADMIN_REP: {
        const lk_admin_rep_t *a = &x->u.admin_rep, *b = &y->u.admin_rep;
        CHECK_I(status);
        CHECK_S(json);
        break;
    }
    case LK_MSG_DECIDE: {
        const lk_decide_t *a = &x->u.decide, *b = &y->u.decide;
        LK_CHECK(memcmp(a->key_hash, b->key_hash, LK_PROTO_HASH_LEN) == 0);
        CHECK_S(key_id);
        CHECK_S(endpoint);
        CHECK_S(model);
        CHECK_I(stream);
        CHECK_S(source_ip);
        CHECK_S(body);
        CHECK_S(headers);
        break;
    }
    case LK_MSG_DECIDE_REP: {
        const lk_decide_rep_t *a = &x->u.decide_rep, *b = &y->u.decide_rep;
        CHECK_I(status);
        CHECK_S(error_code);
        CHECK_S(message);
        CHECK_I(decision);
        CHECK_S(tenant);
        CHECK_S(key_id);
        CHECK_S(user);
        CHECK_S(provider_id);
        CHECK_S(provider_kind);
        CHECK_S(base_url);
        CHECK_S(cred_id);
        CHECK_S(upstream_model);
        CHECK_S(provider_id2);
        CHECK_S(provider_kind2);
        CHECK_S(base_url2);
        CHECK_S(cred_id2);
        CHECK_S(upstream_model2);
        CHECK_S(models);
        CHECK_S(policy_id);
        CHECK_I(policy_version);
        CHECK_S(rule_id);
        CHECK_S(body);
        CHECK_I(would);
        CHECK_I(answer_rules);
        CHECK_S(agent);
        CHECK_S(team);
        CHECK_I(reserved);
        CHECK_I(est_microusd);
        CHECK_I(priced);
        CHECK_I(price_in);
        CHECK_I(price_out);
        CHECK_S(anomaly);
        CHECK_S(hdp);
        break;
    }
    case LK_MSG_POLICY_GET: {
        const lk_policy_get_t *a = &x->u.policy_get, *b = &y->u.policy_get;
        CHECK_S(tenant);
        CHECK_S(policy_id);
        CHECK_I(policy_version);
        break;
    }
    case LK_MSG_POLICY_GET_REP: {
        const lk_policy_get_rep_t *a = &x->u.policy_get_rep, *b = &y->u.policy_get_rep;
        CHECK_S(document);
        break;
    }
    case LK_MSG_SETTLE: {
        const lk_settle_t *a = &x->u.settle, *b = &y->u.settle;
        CHECK_S(tenant);
        CHECK_I(prompt_tokens);
        CHECK_I(completion_tokens);
        break;
    }
    case LK_MSG_SETTLE_REP: {
        const lk_settle_rep_t *a = &x->u.settle_rep, *b = &y->u.settle_rep;
        CHECK_I(microusd);
        break;
    }
    case LK_MSG_HOLD: {
        const lk_hold_t *a = &x->u.hold, *b = &y->u.hold;
        CHECK_S(tenant);
        CHECK_S(key_id);
        LK_CHECK(memcmp(a->digest, b->digest, LK_PROTO_DIGEST_LEN) == 0);
        CHECK_S(policy_id);
        CHECK_I(policy_version);
        CHECK_S(rule_id);
        CHECK_S(reason);
        CHECK_I(timeout_ms);
        CHECK_S(kind);
        CHECK_S(user);
        CHECK_S(agent);
        CHECK_S(model);
        CHECK_S(tool);
        CHECK_S(excerpt);
        break;
    }
    case LK_MSG_HOLD_REP:
    case LK_MSG_HOLD_WAIT_REP: {
        const lk_hold_rep_t *a = &x->u.hold_rep, *b = &y->u.hold_rep;
        CHECK_I(outcome);
        CHECK_S(hold_id);
        CHECK_S(approver);
        CHECK_S(reason);
        CHECK_I(expires_ms);
        break;
    }
    case LK_MSG_HOLD_WAIT: {
        const lk_hold_wait_t *a = &x->u.hold_wait, *b = &y->u.hold_wait;
        CHECK_S(tenant);
        CHECK_S(hold_id);
        break;
    }
    case LK_MSG_AUDIT: {
        const lk_audit_t *a = &x->u.audit, *b = &y->u.audit;
        CHECK_S(event_id);
        CHECK_S(kind);
        CHECK_I(time_ms);
        CHECK_S(tenant);
        CHECK_S(key_id);
        CHECK_S(user);
        CHECK_S(source_ip);
        CHECK_S(endpoint);
        CHECK_S(provider_id);
        CHECK_S(model);
        CHECK_S(upstream_model);
        CHECK_S(decision);
        CHECK_S(policy_id);
        CHECK_I(policy_version);
        CHECK_S(rule_id);
        CHECK_I(http_status);
        CHECK_I(upstream_status);
        CHECK_I(latency_us);
        CHECK_I(prompt_tokens);
        CHECK_I(completion_tokens);
        CHECK_I(total_tokens);
        CHECK_S(error_code);
        CHECK_S(trace_id);
        CHECK_I(stream);
        CHECK_S(agent);
        CHECK_S(approver);
        CHECK_I(cost_micros);
        CHECK_S(request_sha);
        CHECK_S(answer_sha);
        CHECK_S(request_body);
        CHECK_S(answer_body);
        CHECK_S(provider_id2);
        CHECK_S(upstream_model2);
        CHECK_S(anomaly);
        CHECK_S(hdp);
        break;
    }
    case LK_MSG_AUDIT_REP:
        LK_CHECK(x->u.audit_rep.seq == y->u.audit_rep.seq);
        LK_CHECK(x->u.audit_rep.fail_open == y->u.audit_rep.fail_open);
        break;
    default:
        LK_CHECK(!"unexpected type");
    }
}

static int inside(lk_str_t s, const lk_buf_t *b)
{
    if (s.len == 0) return 1;
    return (const uint8_t *)s.ptr >= b->data && (const uint8_t *)s.ptr + s.len <= b->data + b->len;
}

/* Decodes a private copy of exactly n bytes, so ASan sees any read past the end. */
static int decode_exact(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, p, n);
    lk_msg_t m;
    int rc = lk_proto_decode(copy, n, &m);
    free(copy);
    return rc;
}

static void round_trip_all(void)
{
    for (size_t i = 0; i < NTYPES; i++) {
        lk_msg_t in, out;
        fill_all(&in, ALL_TYPES[i]);
        lk_buf_t b;
        lk_buf_init(&b, 0);
        LK_CHECK(lk_proto_encode(&in, &b) == 0);
        LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
        check_same(&in, &out);
        /* zero-copy: strings point into the received buffer */
        LK_CHECK(inside(out.env.rid, &b));
        if (ALL_TYPES[i] == LK_MSG_AUDIT) {
            LK_CHECK(inside(out.u.audit.trace_id, &b));
            LK_CHECK(inside(out.u.audit.event_id, &b));
        }
        if (ALL_TYPES[i] == LK_MSG_DECIDE) LK_CHECK(inside(out.u.decide.body, &b));
        /* canonical: re-encoding the decoded message gives the same bytes */
        lk_buf_t b2;
        lk_buf_init(&b2, 0);
        LK_CHECK(lk_proto_encode(&out, &b2) == 0);
        LK_CHECK(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
        lk_buf_free(&b2);
        lk_buf_free(&b);
    }
}

static void minimal_messages(void)
{
    /* only the required fields: optional ones stay off the wire and decode as empty / 0 */
    lk_msg_t in = {0}, out;
    in.env.type = LK_MSG_PING; /* version 0 means "current" */
    in.env.rid = S("r");
    lk_buf_t b;
    lk_buf_init(&b, 0);
    LK_CHECK(lk_proto_encode(&in, &b) == 0);
    LK_CHECK(b.len == 8); /* [1, 1, "r", 0, 0, {}] = 96 01 01 a1 72 00 00 80 */
    LK_CHECK(b.len > 0 && b.data[b.len - 1] == 0x80);
    LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
    LK_CHECK(out.env.version == LK_PROTO_VERSION && out.u.ping.service.len == 0);

    lk_buf_reset(&b);
    memset(&in, 0, sizeof in);
    in.env.type = LK_MSG_AUDIT;
    in.u.audit.event_id = S("e");
    in.u.audit.kind = S("k");
    LK_CHECK(lk_proto_encode(&in, &b) == 0);
    LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
    LK_CHECK(out.u.audit.tenant.len == 0 && out.u.audit.tenant.ptr == NULL);
    LK_CHECK(out.u.audit.prompt_tokens == 0 && out.u.audit.stream == 0);
    LK_CHECK(lk_str_eq(out.u.audit.kind, "k"));

    /* a refusal needs no decision */
    lk_buf_reset(&b);
    memset(&in, 0, sizeof in);
    in.env.type = LK_MSG_DECIDE_REP;
    in.u.decide_rep.status = LK_ST_UNAUTHORIZED;
    in.u.decide_rep.error_code = S("key_revoked");
    LK_CHECK(lk_proto_encode(&in, &b) == 0);
    LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
    LK_CHECK(out.u.decide_rep.status == LK_ST_UNAUTHORIZED && out.u.decide_rep.decision == 0);

    /* status OK is 0 but still on the wire (required) */
    lk_buf_reset(&b);
    memset(&in, 0, sizeof in);
    in.env.type = LK_MSG_ERROR;
    LK_CHECK(lk_proto_encode(&in, &b) == 0);
    LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
    LK_CHECK(out.u.error.status == LK_ST_OK);
    lk_buf_free(&b);
}

static void secure_buffer(void)
{
    lk_msg_t in, out;
    fill_all(&in, LK_MSG_CRED_GET_REP);
    lk_buf_t b;
    lk_buf_init(&b, 1);
    LK_CHECK(lk_buf_append(&b, "xy", 2) == 0); /* encode appends */
    LK_CHECK(lk_proto_encode(&in, &b) == 0);
    LK_CHECK(b.secure == 1 && b.len > 2 && memcmp(b.data, "xy", 2) == 0);
    LK_CHECK(lk_proto_decode(b.data + 2, b.len - 2, &out) == 0);
    check_same(&in, &out);
    /* a big secret forces the secure buffer to grow (copy + wipe) mid-encode */
    static char big[100000];
    memset(big, 's', sizeof big);
    in.u.cred_get_rep.secret = (lk_str_t){big, sizeof big};
    lk_buf_reset(&b);
    LK_CHECK(lk_proto_encode(&in, &b) == 0);
    LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
    LK_CHECK(out.u.cred_get_rep.secret.len == sizeof big);
    lk_buf_free(&b);
    LK_CHECK(lk_proto_is_secret(LK_MSG_KEY_HASH) && lk_proto_is_secret(LK_MSG_CRED_GET_REP) &&
             lk_proto_is_secret(LK_MSG_ADMIN_AUTH) && lk_proto_is_secret(LK_MSG_ADMIN_REQ) &&
             lk_proto_is_secret(LK_MSG_ADMIN_REP));
    LK_CHECK(!lk_proto_is_secret(LK_MSG_DECIDE) && !lk_proto_is_secret(LK_MSG_AUDIT) &&
             !lk_proto_is_secret((lk_msg_type_t)99));
}

static void reply_envelope(void)
{
    lk_msg_t req, rep;
    fill_all(&req, LK_MSG_DECIDE);
    memset(&rep, 0, sizeof rep);
    rep.u.decide_rep.status = LK_ST_OK;
    rep.u.decide_rep.decision = LK_DECISION_ALLOW;
    lk_proto_reply_env(&rep, &req, LK_MSG_DECIDE_REP);
    LK_CHECK(rep.env.version == LK_PROTO_VERSION);
    LK_CHECK(rep.env.type == LK_MSG_DECIDE_REP);
    LK_CHECK(str_same(rep.env.rid, req.env.rid));
    LK_CHECK(rep.env.call_id == req.env.call_id);
    LK_CHECK(rep.env.deadline_ms == req.env.deadline_ms);
    LK_CHECK(rep.u.decide_rep.decision == LK_DECISION_ALLOW); /* body untouched */
    lk_buf_t b;
    lk_buf_init(&b, 0);
    lk_msg_t out;
    LK_CHECK(lk_proto_encode(&rep, &b) == 0);
    LK_CHECK(lk_proto_decode(b.data, b.len, &out) == 0);
    LK_CHECK(out.env.call_id == req.env.call_id && out.env.type == LK_MSG_DECIDE_REP);
    lk_buf_free(&b);
}

static void names(void)
{
    LK_CHECK_STR(lk_proto_type_name(LK_MSG_DECIDE), "DECIDE");
    LK_CHECK_STR(lk_proto_type_name(LK_MSG_KEY_HASH_REP), "KEY_HASH_REP");
    LK_CHECK_STR(lk_proto_type_name(LK_MSG_AUDIT_REP), "AUDIT_REP");
    LK_CHECK_STR(lk_proto_type_name(LK_MSG_NONE), "UNKNOWN");
    LK_CHECK_STR(lk_proto_type_name((lk_msg_type_t)4), "UNKNOWN");
    LK_CHECK_STR(lk_proto_type_name((lk_msg_type_t)1000), "UNKNOWN");
    LK_CHECK_STR(lk_status_name(LK_ST_OK), "OK");
    LK_CHECK_STR(lk_status_name(LK_ST_INTERNAL), "INTERNAL");
    LK_CHECK_STR(lk_status_name(LK_ST_INTEGRITY), "INTEGRITY");
    LK_CHECK_STR(lk_status_name(LK_ST_RATE_LIMITED), "RATE_LIMITED");
    LK_CHECK_STR(lk_status_name((lk_status_t)10), "UNKNOWN");
    for (size_t i = 0; i < NTYPES; i++)
        LK_CHECK(strcmp(lk_proto_type_name(ALL_TYPES[i]), "UNKNOWN") != 0);
}

static void truncation_and_trailing(void)
{
    for (size_t i = 0; i < NTYPES; i++) {
        lk_msg_t in;
        fill_all(&in, ALL_TYPES[i]);
        lk_buf_t b;
        lk_buf_init(&b, 0);
        LK_CHECK(lk_proto_encode(&in, &b) == 0);
        LK_CHECK(decode_exact(b.data, b.len) == 0);
        int all_fail = 1;
        for (size_t n = 0; n < b.len; n++)
            if (decode_exact(b.data, n) != -1) all_fail = 0;
        LK_CHECK(all_fail);
        /* one trailing byte, then a whole second message */
        size_t len = b.len;
        LK_CHECK(lk_buf_append(&b, "\x00", 1) == 0);
        LK_CHECK(decode_exact(b.data, b.len) == -1);
        b.len = len;
        LK_CHECK(lk_buf_reserve(&b, len) == 0); /* no move while appending from itself */
        LK_CHECK(lk_buf_append(&b, b.data, len) == 0);
        LK_CHECK(decode_exact(b.data, b.len) == -1);
        lk_buf_free(&b);
    }
    lk_msg_t m;
    LK_CHECK(lk_proto_decode(NULL, 0, &m) == -1);
    LK_CHECK(lk_proto_decode((const uint8_t *)"", 0, &m) == -1);
    LK_CHECK(decode_exact((const uint8_t *)"\xc1", 1) == -1);
    LK_CHECK(decode_exact((const uint8_t *)"\x96", 1) == -1);
}

/* ---- hand-built messages ---------------------------------------------------- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} raw_t;

static void raw_init(raw_t *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

static void p_str(raw_t *r, const char *s)
{
    size_t n = strlen(s);
    (void)msgpack_pack_str(&r->pk, n);
    (void)msgpack_pack_str_body(&r->pk, s, n);
}

static void p_bin(raw_t *r, size_t n)
{
    static const char zeros[64];
    (void)msgpack_pack_bin(&r->pk, n);
    (void)msgpack_pack_bin_body(&r->pk, zeros, n);
}

/* [version, type, rid, call_id, deadline, {nbody entries follow}] */
static void p_env(raw_t *r, uint64_t version, uint64_t type, uint32_t nbody)
{
    (void)msgpack_pack_array(&r->pk, 6);
    (void)msgpack_pack_uint64(&r->pk, version);
    (void)msgpack_pack_uint64(&r->pk, type);
    p_str(r, "req_1");
    (void)msgpack_pack_uint64(&r->pk, 7);
    (void)msgpack_pack_int64(&r->pk, 1000);
    (void)msgpack_pack_map(&r->pk, nbody);
}

static void kv_str(raw_t *r, const char *k, const char *v)
{
    p_str(r, k);
    p_str(r, v);
}

static void kv_int(raw_t *r, const char *k, int64_t v)
{
    p_str(r, k);
    (void)msgpack_pack_int64(&r->pk, v);
}

static void kv_bin(raw_t *r, const char *k, size_t n)
{
    p_str(r, k);
    p_bin(r, n);
}

/* Decodes (an exact-size copy) and frees the raw buffer. */
static int raw_decode(raw_t *r)
{
    int rc = decode_exact((const uint8_t *)r->sb.data, r->sb.size);
    msgpack_sbuffer_destroy(&r->sb);
    return rc;
}

static void envelope_errors(void)
{
    raw_t r;
    /* sanity: the builder makes valid messages */
    raw_init(&r);
    p_env(&r, 1, LK_MSG_PING, 0);
    LK_CHECK(raw_decode(&r) == 0);

    raw_init(&r); /* wrong version */
    p_env(&r, 2, LK_MSG_PING, 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 0, LK_MSG_PING, 0);
    LK_CHECK(raw_decode(&r) == -1);

    uint64_t bad_types[] = {0, 4, 9, 16, 22, 52, 99, 1ull << 40};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        raw_init(&r);
        p_env(&r, 1, bad_types[i], 0);
        LK_CHECK(raw_decode(&r) == -1);
    }

    raw_init(&r); /* not an array */
    (void)msgpack_pack_map(&r.pk, 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r); /* 5 and 7 elements */
    (void)msgpack_pack_array(&r.pk, 5);
    for (int i = 0; i < 5; i++)
        (void)msgpack_pack_uint64(&r.pk, 1);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_PING, 0);
    r.sb.data[0] = (char)0x97;
    (void)msgpack_pack_nil(&r.pk);
    LK_CHECK(raw_decode(&r) == -1);

    /* element types, one at a time: [version, type, rid, call_id, deadline, body] */
    for (int bad = 0; bad < 6; bad++) {
        for (int variant = 0; variant < 3; variant++) {
            raw_init(&r);
            (void)msgpack_pack_array(&r.pk, 6);
            for (int e = 0; e < 6; e++) {
                if (e != bad) {
                    switch (e) {
                    case 0:
                        (void)msgpack_pack_uint64(&r.pk, 1);
                        break;
                    case 1:
                        (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
                        break;
                    case 2:
                        p_str(&r, "rid");
                        break;
                    case 3:
                        (void)msgpack_pack_uint64(&r.pk, 1);
                        break;
                    case 4:
                        (void)msgpack_pack_int64(&r.pk, 1);
                        break;
                    case 5:
                        (void)msgpack_pack_map(&r.pk, 0);
                        break;
                    }
                    continue;
                }
                if (variant == 0)
                    (void)msgpack_pack_nil(&r.pk);
                else if (variant == 1)
                    (void)msgpack_pack_double(&r.pk, 1.0);
                else if (e == 2 || e == 5)
                    (void)msgpack_pack_array(&r.pk, 0); /* rid / body as array */
                else
                    p_str(&r, "1"); /* number as string */
            }
            LK_CHECK(raw_decode(&r) == -1);
        }
    }
    raw_init(&r); /* rid as bin */
    (void)msgpack_pack_array(&r.pk, 6);
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
    p_bin(&r, 4);
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_int64(&r.pk, 1);
    (void)msgpack_pack_map(&r.pk, 0);
    LK_CHECK(raw_decode(&r) == -1);

    /* call id must be unsigned; deadline may be negative but fit in int64 */
    raw_init(&r);
    (void)msgpack_pack_array(&r.pk, 6);
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
    p_str(&r, "rid");
    (void)msgpack_pack_int64(&r.pk, -1);
    (void)msgpack_pack_int64(&r.pk, 1);
    (void)msgpack_pack_map(&r.pk, 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    (void)msgpack_pack_array(&r.pk, 6);
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
    p_str(&r, "rid");
    (void)msgpack_pack_uint64(&r.pk, UINT64_MAX);
    (void)msgpack_pack_uint64(&r.pk, (uint64_t)INT64_MAX + 1);
    (void)msgpack_pack_map(&r.pk, 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    (void)msgpack_pack_array(&r.pk, 6);
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
    p_str(&r, "rid");
    (void)msgpack_pack_uint64(&r.pk, UINT64_MAX);
    (void)msgpack_pack_int64(&r.pk, INT64_MIN);
    (void)msgpack_pack_map(&r.pk, 0);
    LK_CHECK(raw_decode(&r) == 0);

    /* rid length: 64 is fine, 65 is not */
    char rid[LK_PROTO_MAX_RID + 2];
    for (int extra = 0; extra < 2; extra++) {
        memset(rid, 'r', sizeof rid);
        rid[LK_PROTO_MAX_RID + extra] = '\0';
        raw_init(&r);
        (void)msgpack_pack_array(&r.pk, 6);
        (void)msgpack_pack_uint64(&r.pk, 1);
        (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
        p_str(&r, rid);
        (void)msgpack_pack_uint64(&r.pk, 1);
        (void)msgpack_pack_int64(&r.pk, 1);
        (void)msgpack_pack_map(&r.pk, 0);
        LK_CHECK(raw_decode(&r) == (extra ? -1 : 0));
    }
}

static void body_errors(void)
{
    raw_t r;
    /* unknown keys are ignored, whatever their value */
    raw_init(&r);
    p_env(&r, 1, LK_MSG_KEY_HASH, 4);
    kv_str(&r, "future", "x");
    p_str(&r, "nested");
    (void)msgpack_pack_map(&r.pk, 1);
    kv_int(&r, "a", -5);
    p_str(&r, "");
    (void)msgpack_pack_nil(&r.pk);
    kv_str(&r, "key", "lk_live_x");
    LK_CHECK(raw_decode(&r) == 0);

    raw_init(&r); /* non-string key */
    p_env(&r, 1, LK_MSG_KEY_HASH, 2);
    kv_str(&r, "key", "lk_live_x");
    (void)msgpack_pack_int64(&r.pk, 1);
    (void)msgpack_pack_int64(&r.pk, 1);
    LK_CHECK(raw_decode(&r) == -1);

    raw_init(&r); /* duplicate key */
    p_env(&r, 1, LK_MSG_KEY_HASH, 2);
    kv_str(&r, "key", "lk_live_x");
    kv_str(&r, "key", "lk_live_y");
    LK_CHECK(raw_decode(&r) == -1);

    raw_init(&r); /* body not a map */
    (void)msgpack_pack_array(&r.pk, 6);
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_uint64(&r.pk, LK_MSG_PING);
    p_str(&r, "rid");
    (void)msgpack_pack_uint64(&r.pk, 1);
    (void)msgpack_pack_int64(&r.pk, 1);
    p_str(&r, "{}");
    LK_CHECK(raw_decode(&r) == -1);

    /* required fields */
    raw_init(&r);
    p_env(&r, 1, LK_MSG_KEY_HASH, 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_KEY_HASH, 1);
    kv_str(&r, "key", "");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT, 1);
    kv_str(&r, "eid", "e1");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT, 1);
    kv_str(&r, "kind", "request.accepted");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT, 2);
    kv_str(&r, "kind", "request.accepted");
    kv_str(&r, "eid", "e1");
    LK_CHECK(raw_decode(&r) == 0);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_ADMIN_REQ, 1);
    kv_str(&r, "tenant", "t");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_ADMIN_REQ, 1);
    kv_str(&r, "op", "keys.list");
    LK_CHECK(raw_decode(&r) == 0);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_ERROR, 1);
    kv_str(&r, "msg", "no status");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_CRED_GET, 1);
    kv_str(&r, "tenant", "t");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT_REP, 0);
    LK_CHECK(raw_decode(&r) == -1);

    /* hash / digest: bin of exactly 32 bytes */
    size_t lens[] = {0, 31, 33, 64};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        raw_init(&r);
        p_env(&r, 1, LK_MSG_KEY_HASH_REP, 1);
        kv_bin(&r, "hash", lens[i]);
        LK_CHECK(raw_decode(&r) == -1);
        raw_init(&r);
        p_env(&r, 1, LK_MSG_DECIDE, 1);
        kv_bin(&r, "hash", lens[i]);
        LK_CHECK(raw_decode(&r) == -1);
    }
    raw_init(&r);
    p_env(&r, 1, LK_MSG_KEY_HASH_REP, 1);
    kv_bin(&r, "hash", 32);
    LK_CHECK(raw_decode(&r) == 0);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_KEY_HASH_REP, 1);
    kv_str(&r, "hash", "0123456789abcdef0123456789abcdef"); /* str, not bin */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_DECIDE, 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_HOLD, 2);
    kv_str(&r, "tenant", "t");
    kv_str(&r, "kid", "k");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_HOLD, 3);
    kv_str(&r, "tenant", "t");
    kv_str(&r, "kid", "k");
    kv_bin(&r, "dig", 31);
    LK_CHECK(raw_decode(&r) == -1);

    /* enums out of range */
    int64_t bad_st[] = {-1, 10, 1000};
    for (size_t i = 0; i < sizeof bad_st / sizeof bad_st[0]; i++) {
        raw_init(&r);
        p_env(&r, 1, LK_MSG_ERROR, 1);
        kv_int(&r, "st", bad_st[i]);
        LK_CHECK(raw_decode(&r) == -1);
        raw_init(&r);
        p_env(&r, 1, LK_MSG_ADMIN_REP, 1);
        kv_int(&r, "st", bad_st[i]);
        LK_CHECK(raw_decode(&r) == -1);
    }
    int64_t bad_dec[] = {0, 6, -1};
    for (size_t i = 0; i < sizeof bad_dec / sizeof bad_dec[0]; i++) {
        raw_init(&r);
        p_env(&r, 1, LK_MSG_DECIDE_REP, 2);
        kv_int(&r, "st", 0);
        kv_int(&r, "dec", bad_dec[i]);
        LK_CHECK(raw_decode(&r) == -1);
        raw_init(&r);
        p_env(&r, 1, LK_MSG_HOLD_REP, 1);
        kv_int(&r, "out", bad_dec[i]);
        LK_CHECK(raw_decode(&r) == -1);
    }
    raw_init(&r); /* OK without a decision */
    p_env(&r, 1, LK_MSG_DECIDE_REP, 1);
    kv_int(&r, "st", 0);
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_DECIDE_REP, 2);
    kv_int(&r, "st", 0);
    kv_int(&r, "dec", LK_DECISION_LOG);
    LK_CHECK(raw_decode(&r) == 0);

    /* wrong value types */
    raw_init(&r);
    p_env(&r, 1, LK_MSG_DECIDE, 2);
    kv_bin(&r, "hash", 32);
    kv_int(&r, "stream", 1); /* bool expected */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_DECIDE, 2);
    kv_bin(&r, "hash", 32);
    kv_int(&r, "model", 4); /* str expected */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_DECIDE, 2);
    kv_bin(&r, "hash", 32);
    kv_bin(&r, "model", 4); /* str expected, not bin */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT, 3);
    kv_str(&r, "eid", "e");
    kv_str(&r, "kind", "k");
    kv_str(&r, "http", "200"); /* int expected */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT, 3);
    kv_str(&r, "eid", "e");
    kv_str(&r, "kind", "k");
    p_str(&r, "lat");
    (void)msgpack_pack_double(&r.pk, 1.5); /* int expected, not float */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_AUDIT, 3);
    kv_str(&r, "eid", "e");
    kv_str(&r, "kind", "k");
    p_str(&r, "ptok");
    (void)msgpack_pack_uint64(&r.pk, (uint64_t)INT64_MAX + 1); /* does not fit int64 */
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_ERROR, 1);
    kv_str(&r, "st", "0");
    LK_CHECK(raw_decode(&r) == -1);
}

static void hostile_framing(void)
{
    /* containers that announce far more elements than the input holds */
    LK_CHECK(decode_exact((const uint8_t *)"\xdd\xff\xff\xff\xff\x01", 6) == -1);
    LK_CHECK(decode_exact((const uint8_t *)"\xdf\xff\xff\xff\xff\x01\x01", 7) == -1);
    LK_CHECK(decode_exact((const uint8_t *)"\x96\x01\x01\xa0\x00\x00\xdf\x7f\xff\xff\xff", 11) == -1);
    LK_CHECK(decode_exact((const uint8_t *)"\x96\x01\x01\xdb\xff\xff\xff\xff", 8) == -1);
    /* nesting deeper than msgpack-c's stack inside an unknown key: refused, not a crash */
    raw_t r;
    raw_init(&r);
    p_env(&r, 1, LK_MSG_PING, 1);
    p_str(&r, "deep");
    for (int i = 0; i < 100; i++)
        (void)msgpack_pack_array(&r.pk, 1);
    (void)msgpack_pack_nil(&r.pk);
    LK_CHECK(raw_decode(&r) == -1);
    /* ext and fixext values under an unknown key are skipped */
    raw_init(&r);
    p_env(&r, 1, LK_MSG_PING, 2);
    p_str(&r, "x1");
    (void)msgpack_pack_ext(&r.pk, 4, 5);
    (void)msgpack_pack_ext_body(&r.pk, "abcd", 4);
    p_str(&r, "x2");
    (void)msgpack_pack_ext(&r.pk, 300, 5);
    static const char big[300];
    (void)msgpack_pack_ext_body(&r.pk, big, 300);
    LK_CHECK(raw_decode(&r) == 0);
}

static void encode_errors(void)
{
    lk_buf_t b;
    lk_buf_init(&b, 0);
    LK_CHECK(lk_buf_append(&b, "keep", 4) == 0);
    lk_msg_t m;

    fill_all(&m, LK_MSG_PING);
    m.env.type = (lk_msg_type_t)4;
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_PING);
    m.env.version = 2;
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_PING);
    char rid[LK_PROTO_MAX_RID + 1];
    memset(rid, 'r', sizeof rid);
    m.env.rid = (lk_str_t){rid, sizeof rid};
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_KEY_HASH);
    m.u.key_hash.key = LK_STR_NULL; /* required */
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_AUDIT);
    m.u.audit.kind = S(""); /* required, written last-but-many: a partial write is rolled back */
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_AUDIT);
    m.u.audit.trace_id = (lk_str_t){NULL, 3};
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_ERROR);
    m.u.error.status = (lk_status_t)10;
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_DECIDE_REP);
    m.u.decide_rep.decision = (lk_decision_t)0; /* OK needs a decision */
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_DECIDE_REP);
    m.u.decide_rep.decision = (lk_decision_t)6;
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    fill_all(&m, LK_MSG_HOLD_REP);
    m.u.hold_rep.outcome = (lk_hold_outcome_t)0;
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    LK_CHECK(lk_proto_encode(NULL, &b) == -1);
    LK_CHECK(b.len == 4 && memcmp(b.data, "keep", 4) == 0); /* failures leave out as it was */
    lk_buf_free(&b);

    /* a failed secure encode leaves no partial secret behind */
    lk_buf_init(&b, 1);
    fill_all(&m, LK_MSG_ADMIN_REQ);
    m.u.admin_req.json = (lk_str_t){NULL, 5}; /* last field: everything before it was written */
    LK_CHECK(lk_proto_encode(&m, &b) == -1);
    LK_CHECK(b.len == 0);
    LK_CHECK(b.data && memmem(b.data, b.cap, "keys.update", 11) == NULL);
    LK_CHECK(b.data && memmem(b.data, b.cap, "key_abc", 7) == NULL);
    lk_buf_free(&b);
}

/* HOLD_WAIT / HOLD_WAIT_REP and the PENDING outcome: what the edge polls with. */
static void hold_wait_messages(void)
{
    raw_t r;
    raw_init(&r); /* PENDING with its expiry */
    p_env(&r, 1, LK_MSG_HOLD_REP, 3);
    kv_int(&r, "out", LK_HOLD_PENDING);
    kv_str(&r, "hold", "hold_a");
    kv_int(&r, "exp", 1790000000000);
    LK_CHECK(raw_decode(&r) == 0);
    raw_init(&r);
    p_env(&r, 1, LK_MSG_HOLD_WAIT, 2);
    kv_str(&r, "tenant", "t");
    kv_str(&r, "hold", "hold_a");
    LK_CHECK(raw_decode(&r) == 0);
    raw_init(&r); /* the hold id is required */
    p_env(&r, 1, LK_MSG_HOLD_WAIT, 1);
    kv_str(&r, "tenant", "t");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r); /* and not empty */
    p_env(&r, 1, LK_MSG_HOLD_WAIT, 2);
    kv_str(&r, "tenant", "t");
    kv_str(&r, "hold", "");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r); /* hold id of the wrong type */
    p_env(&r, 1, LK_MSG_HOLD_WAIT, 2);
    kv_str(&r, "tenant", "t");
    kv_int(&r, "hold", 7);
    LK_CHECK(raw_decode(&r) == -1);
    int64_t bad_out[] = {0, 6, -1, 255};
    for (size_t i = 0; i < sizeof bad_out / sizeof bad_out[0]; i++) {
        raw_init(&r);
        p_env(&r, 1, LK_MSG_HOLD_WAIT_REP, 1);
        kv_int(&r, "out", bad_out[i]);
        LK_CHECK(raw_decode(&r) == -1);
    }
    raw_init(&r); /* exp must be an int */
    p_env(&r, 1, LK_MSG_HOLD_WAIT_REP, 2);
    kv_int(&r, "out", LK_HOLD_APPROVED);
    kv_str(&r, "exp", "soon");
    LK_CHECK(raw_decode(&r) == -1);
    raw_init(&r); /* kind must be a string */
    p_env(&r, 1, LK_MSG_HOLD, 4);
    kv_str(&r, "tenant", "t");
    kv_str(&r, "kid", "k");
    kv_bin(&r, "dig", 32);
    kv_int(&r, "kind", 1);
    LK_CHECK(raw_decode(&r) == -1);
    LK_CHECK(strcmp(lk_proto_type_name(LK_MSG_HOLD_WAIT), "HOLD_WAIT") == 0);
    LK_CHECK(strcmp(lk_proto_type_name(LK_MSG_HOLD_WAIT_REP), "HOLD_WAIT_REP") == 0);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    LK_RUN(round_trip_all);
    LK_RUN(minimal_messages);
    LK_RUN(secure_buffer);
    LK_RUN(reply_envelope);
    LK_RUN(names);
    LK_RUN(truncation_and_trailing);
    LK_RUN(envelope_errors);
    LK_RUN(body_errors);
    LK_RUN(hostile_framing);
    LK_RUN(encode_errors);
    LK_RUN(hold_wait_messages);
    return LK_TEST_DONE();
}
