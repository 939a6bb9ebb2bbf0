/*  fuzz_policy - the policy document compiler, then evaluation and streams.
 *
 *  Input: a policy document, a 0x00 byte, a selector byte, then a body. The
 *  document is compiled; when valid, the body is evaluated as a request and as
 *  an answer of the API the selector picks (low 2 bits), then fed as a stream
 *  split into SSE events at newlines ("name|data" lines carry an event name;
 *  selector bit 2: Anthropic, else chat).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lk_policy.h"

static void on_emit(void *ud, const char *event, size_t event_len, const char *data, size_t data_len)
{
    volatile size_t sink = event_len + data_len;
    (void)sink;
    if (data_len) (void)data[data_len - 1];
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* Compiling a Hyperscan database per input drops the fuzzer to a few runs per second; the
     * prefilter only skips PCRE2 work, so fuzz the PCRE2 path unless asked (LK_FUZZ_HS=1). */
    if (!getenv("LK_FUZZ_HS")) setenv("LK_POLICY_NO_HS", "1", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *sep = memchr(in, 0, size);
    size_t doc_len = sep ? (size_t)(sep - in) : size;
    lk_policy_error_t err;
    lk_policy_t *p = lk_policy_compile(in, doc_len, &err);
    if (!p) return 0;
    lk_policy_limits_t l;
    lk_policy_limits(p, &l);
    (void)lk_policy_has_answer_rules(p);
    if (!sep) {
        lk_policy_free(&p);
        return 0;
    }
    if (size - doc_len < 2) {
        lk_policy_free(&p);
        return 0;
    }
    unsigned sel = (unsigned char)sep[1];
    const char *body = sep + 2;
    size_t blen = size - doc_len - 2;
    lk_api_t api = (lk_api_t)(sel % 4 + 1);
    const char *hdr[1][2] = {{"x-agent-run", "prod-1"}};
    lk_policy_ctx_t ctx = {.api = api,
                           .provider_kind = "openai",
                           .team = "finance",
                           .agent = "billing-bot",
                           .user = "alice",
                           .headers = hdr,
                           .n_headers = 1};
    lk_policy_result_t r;
    if (lk_policy_eval_request(p, &ctx, body, blen, &r) == 0 && r.body) (void)r.body[r.body_len];
    lk_policy_result_clear(&r);
    if (lk_policy_eval_answer(p, &ctx, body, blen, &r) == 0 && r.body) (void)r.body[r.body_len];
    lk_policy_result_clear(&r);

    ctx.api = sel & 4 ? LK_API_MESSAGES : LK_API_CHAT;
    lk_policy_stream_t *s = lk_policy_stream_new(p, &ctx, on_emit, NULL);
    size_t pos = 0;
    int rc = 0;
    while (s && pos < blen && rc == 0) {
        const char *nl = memchr(body + pos, '\n', blen - pos);
        size_t n = nl ? (size_t)(nl - body - pos) : blen - pos;
        /* "name|data" lines carry an event name */
        const char *bar = memchr(body + pos, '|', n);
        if (bar)
            rc = lk_policy_stream_feed(s, body + pos, (size_t)(bar - body - pos), bar + 1,
                                       n - (size_t)(bar - body - pos) - 1);
        else
            rc = lk_policy_stream_feed(s, NULL, 0, body + pos, n);
        pos += n + 1;
    }
    if (s && rc == 0) (void)lk_policy_stream_finish(s);
    if (s) (void)lk_policy_stream_result(s);
    lk_policy_stream_free(&s);
    lk_policy_free(&p);
    return 0;
}
