/*  test_hdp_policy - the opt-in `hdp` policy condition (lk_policy) and the
 *  request tool list the HDP scope check reads (lk_policy_request_tools).
 */
#include <stdlib.h>
#include <string.h>

#include "lk_policy.h"
#include "lk_test.h"

#define CHAT_BODY "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

static lk_policy_t *compile(const char *doc, lk_policy_error_t *err)
{
    memset(err, 0, sizeof *err);
    return lk_policy_compile(doc, strlen(doc), err);
}

static void test_validation(void)
{
    static const struct {
        const char *when, *path;
    } bad[] = {
        {"{\"hdp\":{}}", "rules[0].when.hdp"},
        {"{\"hdp\":true}", "rules[0].when.hdp"},
        {"{\"hdp\":{\"verified\":\"no\"}}", "rules[0].when.hdp.verified"},
        {"{\"hdp\":{\"scope_mismatch\":1}}", "rules[0].when.hdp.scope_mismatch"},
        {"{\"hdp\":{\"reason\":[]}}", "rules[0].when.hdp.reason"},
        {"{\"hdp\":{\"signed\":true}}", "rules[0].when.hdp"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char doc[512];
        snprintf(doc, sizeof doc, "{\"rules\":[{\"id\":\"r\",\"when\":%s,\"action\":\"hold\"}]}",
                 bad[i].when);
        lk_policy_error_t err;
        lk_policy_t *p = compile(doc, &err);
        LK_CHECK(p == NULL);
        if (strcmp(err.path, bad[i].path) != 0)
            fprintf(stderr, "  %s: path %s (%s)\n", bad[i].when, err.path, err.msg);
        LK_CHECK_STR(err.path, bad[i].path);
        lk_policy_free(&p);
    }
    lk_policy_error_t err;
    lk_policy_t *p =
        compile("{\"rules\":[{\"id\":\"r\",\"when\":{\"hdp\":{\"present\":true,\"verified\":false,"
                "\"scope_mismatch\":false,\"reason\":[\"expired\",\"bad_*\"]}},\"action\":\"hold\"}]}",
                &err);
    LK_CHECK(p != NULL);
    lk_policy_free(&p);
}

/* The action the document takes on a chat request with HDP facts h (NULL: no header). */
static lk_action_t eval(const char *doc, const lk_policy_hdp_t *h, char *rule, size_t cap)
{
    lk_policy_error_t err;
    lk_policy_t *p = compile(doc, &err);
    if (!p) {
        fprintf(stderr, "  compile: %s at %s\n", err.msg, err.path);
        return (lk_action_t)-1;
    }
    lk_policy_ctx_t ctx = {.api = LK_API_CHAT, .provider_kind = "openai", .hdp = h};
    lk_policy_result_t r = {0};
    lk_action_t a = (lk_action_t)-1;
    if (lk_policy_eval_request(p, &ctx, CHAT_BODY, strlen(CHAT_BODY), &r) == 0) a = r.action;
    snprintf(rule, cap, "%s", r.rule_id);
    lk_policy_result_clear(&r);
    lk_policy_free(&p);
    return a;
}

static void test_eval(void)
{
    static const char doc[] =
        "{\"rules\":["
        "{\"id\":\"hold-mismatch\",\"when\":{\"hdp\":{\"scope_mismatch\":true}},\"action\":\"hold\"},"
        "{\"id\":\"block-forged\",\"when\":{\"hdp\":{\"present\":true,\"reason\":[\"bad_signature\","
        "\"chain_*\"]}},\"action\":\"block\",\"message\":\"forged delegation\"},"
        "{\"id\":\"log-unverified\",\"when\":{\"hdp\":{\"verified\":false}},\"action\":\"log\"}]}";
    char rule[64];
    lk_policy_hdp_t ok = {1, 1, 0, "ok"}, mism = {1, 1, 1, "ok"}, forged = {1, 0, 0, "bad_signature"},
                    broken = {1, 0, 0, "chain_broken"}, expired = {1, 0, 0, "expired"};
    LK_CHECK(eval(doc, &ok, rule, sizeof rule) == LK_ACT_ALLOW);
    LK_CHECK(eval(doc, &mism, rule, sizeof rule) == LK_ACT_HOLD);
    LK_CHECK_STR(rule, "hold-mismatch");
    LK_CHECK(eval(doc, &forged, rule, sizeof rule) == LK_ACT_BLOCK);
    LK_CHECK_STR(rule, "block-forged");
    LK_CHECK(eval(doc, &broken, rule, sizeof rule) == LK_ACT_BLOCK);
    LK_CHECK(eval(doc, &expired, rule, sizeof rule) == LK_ACT_LOG);
    LK_CHECK_STR(rule, "log-unverified");
    /* no header: not present, not verified, no reason */
    LK_CHECK(eval(doc, NULL, rule, sizeof rule) == LK_ACT_LOG);
    LK_CHECK(
        eval("{\"rules\":[{\"id\":\"need\",\"when\":{\"hdp\":{\"present\":false}},\"action\":\"block\"}]}",
             NULL, rule, sizeof rule) == LK_ACT_BLOCK);
    LK_CHECK(
        eval("{\"rules\":[{\"id\":\"need\",\"when\":{\"hdp\":{\"present\":false}},\"action\":\"block\"}]}",
             &ok, rule, sizeof rule) == LK_ACT_ALLOW);
    /* a policy without hdp conditions ignores HDP entirely (record-only default) */
    LK_CHECK(eval("{\"rules\":[{\"id\":\"m\",\"when\":{\"model\":\"x*\"},\"action\":\"block\"}]}", &forged,
                  rule, sizeof rule) == LK_ACT_ALLOW);
}

typedef struct {
    char names[8][32];
    int is_call[8];
    int n;
} seen_t;

static void on_tool(void *ud, const char *name, int is_call)
{
    seen_t *s = ud;
    if (s->n < 8) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
        s->is_call[s->n++] = is_call;
    }
}

static void test_request_tools(void)
{
    static const char chat[] =
        "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"web_search\"}}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"tool_calls\":[{"
        "\"id\":"
        "\"c1\",\"type\":\"function\",\"function\":{\"name\":\"shell\",\"arguments\":\"{}\"}}]},{\"role\":"
        "\"tool\",\"tool_call_id\":\"c1\",\"content\":\"ok\"}]}";
    seen_t s = {0};
    LK_CHECK(lk_policy_request_tools(LK_API_CHAT, chat, strlen(chat), on_tool, &s) == 0);
    LK_CHECK(s.n == 2);
    LK_CHECK_STR(s.names[0], "web_search");
    LK_CHECK(s.is_call[0] == 0);
    LK_CHECK_STR(s.names[1], "shell");
    LK_CHECK(s.is_call[1] == 1);
    static const char msgs[] =
        "{\"model\":\"m\",\"max_tokens\":5,\"tools\":[{\"name\":\"calc\",\"input_schema\":{}}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    seen_t t = {0};
    LK_CHECK(lk_policy_request_tools(LK_API_MESSAGES, msgs, strlen(msgs), on_tool, &t) == 0);
    LK_CHECK(t.n == 1 && strcmp(t.names[0], "calc") == 0);
    seen_t u = {0};
    LK_CHECK(lk_policy_request_tools(LK_API_CHAT, "{", 1, on_tool, &u) == -1 && u.n == 0);
}

int main(void)
{
    LK_RUN(test_validation);
    LK_RUN(test_eval);
    LK_RUN(test_request_tools);
    return LK_TEST_DONE();
}
