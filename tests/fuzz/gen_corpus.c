/*  gen_corpus - writes the seed corpora committed under tests/fuzz/corpus/.
 *
 *      gen_corpus proto <dir>   one valid encoding per message type (+ a few minimal ones)
 *      gen_corpus key <dir>     generated keys of each kind and some malformed ones
 *
 *  Keys written here are random test material, never registered anywhere.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "lk_key.h"
#include "lk_proto.h"

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        fprintf(stderr, "gen_corpus: cannot write %s\n", path);
        if (f) fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int emit(const char *dir, const char *name, const lk_msg_t *m)
{
    lk_buf_t b;
    lk_buf_init(&b, 0);
    int rc = lk_proto_encode(m, &b) == 0 ? write_file(dir, name, b.data, b.len) : -1;
    if (rc != 0) fprintf(stderr, "gen_corpus: %s failed\n", name);
    lk_buf_free(&b);
    return rc;
}

static lk_msg_t base(lk_msg_type_t type)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.version = LK_PROTO_VERSION;
    m.env.type = type;
    m.env.rid = LK_STR_LIT("req_0f1e2d3c4b5a69788796a5b4");
    m.env.call_id = 1234567;
    m.env.deadline_ms = 1767225600000;
    return m;
}

static int gen_proto(const char *dir)
{
    int rc = 0;
    lk_msg_t m = base(LK_MSG_PING);
    rc |= emit(dir, "ping", &m);
    m = base(LK_MSG_PONG);
    m.u.ping.service = LK_STR_LIT("vault");
    rc |= emit(dir, "pong", &m);
    m = base(LK_MSG_ERROR);
    m.u.error.status = LK_ST_UNAVAILABLE;
    m.u.error.message = LK_STR_LIT("sealed");
    rc |= emit(dir, "error", &m);
    m = base(LK_MSG_KEY_HASH);
    m.u.key_hash.key = LK_STR_LIT("lk_test_0123456789abcdefGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq012345");
    rc |= emit(dir, "key_hash", &m);
    m = base(LK_MSG_KEY_HASH_REP);
    memset(m.u.key_hash_rep.hash, 0xab, LK_PROTO_HASH_LEN);
    rc |= emit(dir, "key_hash_rep", &m);
    m = base(LK_MSG_CRED_GET);
    m.u.cred_get.tenant = LK_STR_LIT("ten_1");
    m.u.cred_get.cred_id = LK_STR_LIT("cred_1");
    rc |= emit(dir, "cred_get", &m);
    m = base(LK_MSG_CRED_GET_REP);
    m.u.cred_get_rep.secret = LK_STR_LIT("sk-not-a-real-secret");
    rc |= emit(dir, "cred_get_rep", &m);
    m = base(LK_MSG_ADMIN_AUTH);
    m.u.admin_auth.token = LK_STR_LIT("lk_adm_not_a_token");
    rc |= emit(dir, "admin_auth", &m);
    m = base(LK_MSG_ADMIN_AUTH_REP);
    m.u.admin_auth_rep.tenant = LK_STR_LIT("ten_1");
    m.u.admin_auth_rep.role = LK_STR_LIT("admin");
    m.u.admin_auth_rep.token_id = LK_STR_LIT("tok_1");
    rc |= emit(dir, "admin_auth_rep", &m);
    m = base(LK_MSG_ADMIN_REQ);
    m.u.admin_req.op = LK_STR_LIT("keys.create");
    m.u.admin_req.tenant = LK_STR_LIT("ten_1");
    m.u.admin_req.actor = LK_STR_LIT("tok_1");
    m.u.admin_req.role = LK_STR_LIT("admin");
    m.u.admin_req.json = LK_STR_LIT("{\"name\":\"ci\"}");
    rc |= emit(dir, "admin_req", &m);
    m = base(LK_MSG_ADMIN_REP);
    m.u.admin_rep.status = LK_ST_OK;
    m.u.admin_rep.json = LK_STR_LIT("{\"id\":\"key_1\"}");
    rc |= emit(dir, "admin_rep", &m);
    m = base(LK_MSG_DECIDE);
    memset(m.u.decide.key_hash, 0x11, LK_PROTO_HASH_LEN);
    m.u.decide.key_id = LK_STR_LIT("key_0123456789abcdef");
    m.u.decide.endpoint = LK_STR_LIT("chat.completions");
    m.u.decide.model = LK_STR_LIT("gpt-4o");
    m.u.decide.stream = 1;
    m.u.decide.source_ip = LK_STR_LIT("127.0.0.1");
    m.u.decide.body =
        LK_STR_LIT("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    rc |= emit(dir, "decide", &m);
    m = base(LK_MSG_DECIDE_REP);
    m.u.decide_rep.status = LK_ST_OK;
    m.u.decide_rep.decision = LK_DECISION_ALLOW;
    m.u.decide_rep.tenant = LK_STR_LIT("ten_1");
    m.u.decide_rep.key_id = LK_STR_LIT("key_1");
    m.u.decide_rep.provider_id = LK_STR_LIT("prov_1");
    m.u.decide_rep.provider_kind = LK_STR_LIT("openai");
    m.u.decide_rep.base_url = LK_STR_LIT("https://api.openai.com/v1");
    m.u.decide_rep.cred_id = LK_STR_LIT("cred_1");
    m.u.decide_rep.upstream_model = LK_STR_LIT("gpt-4o");
    m.u.decide_rep.policy_id = LK_STR_LIT("pol_1");
    m.u.decide_rep.policy_version = 3;
    m.u.decide_rep.rule_id = LK_STR_LIT("r1");
    rc |= emit(dir, "decide_rep", &m);
    m = base(LK_MSG_DECIDE_REP);
    m.u.decide_rep.status = LK_ST_UNAUTHORIZED;
    m.u.decide_rep.error_code = LK_STR_LIT("key_revoked");
    m.u.decide_rep.message = LK_STR_LIT("This key was revoked.");
    rc |= emit(dir, "decide_rep_denied", &m);
    m = base(LK_MSG_HOLD);
    m.u.hold.tenant = LK_STR_LIT("ten_1");
    m.u.hold.key_id = LK_STR_LIT("key_1");
    memset(m.u.hold.digest, 0x22, LK_PROTO_DIGEST_LEN);
    m.u.hold.policy_id = LK_STR_LIT("pol_1");
    m.u.hold.policy_version = 3;
    m.u.hold.rule_id = LK_STR_LIT("r2");
    m.u.hold.reason = LK_STR_LIT("tool call");
    m.u.hold.timeout_ms = 600000;
    rc |= emit(dir, "hold", &m);
    m = base(LK_MSG_HOLD_REP);
    m.u.hold_rep.outcome = LK_HOLD_APPROVED;
    m.u.hold_rep.hold_id = LK_STR_LIT("hold_1");
    m.u.hold_rep.approver = LK_STR_LIT("alice");
    rc |= emit(dir, "hold_rep", &m);
    m = base(LK_MSG_AUDIT);
    m.u.audit.event_id = LK_STR_LIT("0b7c5a4e-9d1f-8c2b-a3e4-5f6a7b8c9d0e");
    m.u.audit.kind = LK_STR_LIT("request.completed");
    m.u.audit.time_ms = 1767225600500;
    m.u.audit.tenant = LK_STR_LIT("ten_1");
    m.u.audit.key_id = LK_STR_LIT("key_1");
    m.u.audit.endpoint = LK_STR_LIT("chat.completions");
    m.u.audit.model = LK_STR_LIT("gpt-4o");
    m.u.audit.decision = LK_STR_LIT("allow");
    m.u.audit.http_status = 200;
    m.u.audit.upstream_status = 200;
    m.u.audit.latency_us = 812345;
    m.u.audit.prompt_tokens = 12;
    m.u.audit.completion_tokens = -1;
    m.u.audit.total_tokens = -1;
    m.u.audit.trace_id = LK_STR_LIT("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    m.u.audit.stream = 1;
    m.u.audit.agent = LK_STR_LIT("OpenAI/Python 1.0");
    m.u.audit.approver = LK_STR_LIT("bob");
    m.u.audit.cost_micros = 1234;
    m.u.audit.request_sha = LK_STR_LIT("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    m.u.audit.answer_sha = LK_STR_LIT("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    m.u.audit.request_body = LK_STR_LIT("{\"model\":\"gpt-4o\"}");
    rc |= emit(dir, "audit", &m);
    m = base(LK_MSG_AUDIT_REP);
    m.u.audit_rep.seq = 99;
    m.u.audit_rep.fail_open = 1;
    rc |= emit(dir, "audit_rep", &m);
    return rc;
}

static int gen_key(const char *dir)
{
    static const struct {
        lk_key_kind_t kind;
        const char *name;
    } KINDS[] = {{LK_KEY_LIVE, "live"}, {LK_KEY_TEST, "test"}, {LK_KEY_ADMIN, "admin"}};
    int rc = 0;
    char key[LK_KEY_MAX_LEN], id[LK_KEY_ID_LEN + 1], bad[LK_KEY_MAX_LEN + 4];
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++) {
        lk_key_generate(KINDS[i].kind, key, id);
        rc |= write_file(dir, KINDS[i].name, key, strlen(key));
    }
    size_t len = strlen(key);
    memcpy(bad, key, len);
    bad[len - 1] = bad[len - 1] == 'a' ? 'b' : 'a';
    rc |= write_file(dir, "bad_checksum", bad, len);
    bad[0] = ' ';
    memcpy(bad + 1, key, len);
    rc |= write_file(dir, "leading_space", bad, len + 1);
    memcpy(bad, key, len);
    bad[10] = (char)0xd0;
    bad[11] = (char)0xbe;
    rc |= write_file(dir, "cyrillic_o", bad, len);
    rc |= write_file(dir, "truncated", key, len - 5);
    rc |= write_file(dir, "empty", "", 0);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3 || sodium_init() < 0) {
        fprintf(stderr, "usage: gen_corpus proto|key <dir>\n");
        return 2;
    }
    if (strcmp(argv[1], "proto") == 0) return gen_proto(argv[2]) ? 1 : 0;
    if (strcmp(argv[1], "key") == 0) return gen_key(argv[2]) ? 1 : 0;
    fprintf(stderr, "usage: gen_corpus proto|key <dir>\n");
    return 2;
}
