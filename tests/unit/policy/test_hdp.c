/*  test_hdp - lk_hdp: RFC 8785 canonical JSON (the RFC's own vectors), and
 *  verification of tokens issued by the independent reference implementation
 *  (hdp-langchain, hdp_vectors.h), of tampered, truncated, expired,
 *  wrong-issuer and over-hop tokens, of the scope comparison, and of garbage.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hdp_vectors.h"
#include "lk_hdp.h"
#include "lk_test.h"

#define NOW_MS 1800000000000LL /* 2027-01-15: before the vectors' expiry (issued + 10^12 ms) */

/* ---- RFC 8785 ------------------------------------------------------------------------------ */

static void check_jcs(const char *in, const char *want)
{
    json_error_t je;
    json_t *j = json_loads(in, JSON_DECODE_ANY, &je);
    LK_CHECK(j != NULL);
    size_t n = 0;
    char *out = lk_hdp_jcs(j, &n);
    LK_CHECK(out != NULL);
    if (out && strcmp(out, want) != 0) fprintf(stderr, "  jcs(%s)\n   = %s\n want %s\n", in, out, want);
    LK_CHECK(out && strcmp(out, want) == 0 && n == strlen(want));
    free(out);
    json_decref(j);
}

static void test_jcs_rfc_examples(void)
{
    /* RFC 8785 section 3.2.2 */
    check_jcs("{\"numbers\":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"
              "\"string\":\"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\","
              "\"literals\":[null,true,false]}",
              "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
              "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
    /* RFC 8785 section 3.2.3: keys sorted by UTF-16 code units (the emoji's surrogate before U+FB33) */
    check_jcs(
        "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With "
        "Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\","
        "\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}",
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\",\"\xc3\xb6\":\"Latin Small "
        "Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning "
        "Face\",\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}");
    check_jcs("[\"\\u0001\\u001f\\b\\f\\t\",{}, [], \"\"]", "[\"\\u0001\\u001f\\b\\f\\t\",{},[],\"\"]");
    check_jcs("{\"b\":{\"z\":1,\"a\":[1.0,-0.0,10,1e2]},\"a\":\"x\"}",
              "{\"a\":\"x\",\"b\":{\"a\":[1,0,10,100],\"z\":1}}");
}

static void test_jcs_numbers(void)
{
    /* RFC 8785 appendix B: IEEE 754 bit patterns and their ECMAScript form */
    static const struct {
        uint64_t bits;
        const char *want;
    } v[] = {
        {0x0000000000000000ULL, "0"},
        {0x8000000000000000ULL, "0"},
        {0x0000000000000001ULL, "5e-324"},
        {0x8000000000000001ULL, "-5e-324"},
        {0x7fefffffffffffffULL, "1.7976931348623157e+308"},
        {0xffefffffffffffffULL, "-1.7976931348623157e+308"},
        {0x4340000000000000ULL, "9007199254740992"},
        {0xc340000000000000ULL, "-9007199254740992"},
        {0x4430000000000000ULL, "295147905179352830000"},
        {0x44b52d02c7e14af5ULL, "9.999999999999997e+22"},
        {0x44b52d02c7e14af6ULL, "1e+23"},
        {0x44b52d02c7e14af7ULL, "1.0000000000000001e+23"},
        {0x444b1ae4d6e2ef4eULL, "999999999999999700000"},
        {0x444b1ae4d6e2ef4fULL, "999999999999999900000"},
        {0x444b1ae4d6e2ef50ULL, "1e+21"},
        {0x3eb0c6f7a0b5ed8cULL, "9.999999999999997e-7"},
        {0x3eb0c6f7a0b5ed8dULL, "0.000001"},
        {0x41b3de4355555553ULL, "333333333.3333332"},
        {0x41b3de4355555554ULL, "333333333.33333325"},
        {0x41b3de4355555555ULL, "333333333.3333333"},
        {0x41b3de4355555556ULL, "333333333.3333334"},
        {0x41b3de4355555557ULL, "333333333.33333343"},
        {0xbecbf647612f3696ULL, "-0.0000033333333333333333"},
        {0x43143ff3c1cb0959ULL, "1424953923781206.2"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        double d;
        memcpy(&d, &v[i].bits, sizeof d);
        json_t *j = json_real(d);
        char *out = lk_hdp_jcs(j, NULL);
        if (!out || strcmp(out, v[i].want) != 0)
            fprintf(stderr, "  %016llx: got %s want %s\n", (unsigned long long)v[i].bits, out ? out : "NULL",
                    v[i].want);
        LK_CHECK(out && strcmp(out, v[i].want) == 0);
        free(out);
        json_decref(j);
    }
    /* integers beyond 2^53 take the double form; a 2^53-1 integer stays exact */
    json_t *j = json_pack("[I,I]", (json_int_t)9007199254740991LL, (json_int_t)9007199254740993LL);
    char *out = lk_hdp_jcs(j, NULL);
    LK_CHECK(out && strcmp(out, "[9007199254740991,9007199254740992]") == 0);
    free(out);
    json_decref(j);
}

/* ---- verification -------------------------------------------------------------------------- */

typedef struct {
    int mode; /* 0 trusted, 1 unknown, 2 other key, 3 revoked, 4 lookup fails */
    int calls;
    char kid[64];
} lookup_t;

static int lookup(void *ud, const char *kid, lk_hdp_issuer_t *out)
{
    lookup_t *l = ud;
    l->calls++;
    snprintf(l->kid, sizeof l->kid, "%s", kid);
    if (l->mode == 4) return -1;
    if (l->mode == 1 || strcmp(kid, "unit-key") != 0) return 0;
    snprintf(out->name, sizeof out->name, "unit issuer");
    if (lk_hdp_parse_pubkey(PK_B64URL, out->pk) != 0) return -1;
    if (l->mode == 2) out->pk[5] ^= 1;
    out->revoked = l->mode == 3;
    return 1;
}

static const char *reason_of(json_t *r)
{
    return json_string_value(json_object_get(r, "reason"));
}

static json_t *verify(const char *v, size_t n, int mode, int64_t now, lk_hdp_facts_t *f)
{
    lookup_t l = {.mode = mode};
    return lk_hdp_verify(v, n, now, lookup, &l, NULL, f);
}

/* base64url (no padding) of s */
static char *b64(const char *s)
{
    size_t cap = sodium_base64_encoded_len(strlen(s), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *o = malloc(cap);
    sodium_bin2base64(o, cap, (const unsigned char *)s, strlen(s), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return o;
}

static void test_reference_token_verifies(void)
{
    lk_hdp_facts_t f;
    lookup_t l = {0};
    json_t *r = lk_hdp_verify(TOKEN_HDR, strlen(TOKEN_HDR), NOW_MS, lookup, &l, NULL, &f);
    LK_CHECK(r != NULL);
    LK_CHECK_STR(reason_of(r), "ok");
    LK_CHECK(json_is_true(json_object_get(r, "verified")) && f.verified && f.present && !f.scope_mismatch);
    LK_CHECK_STR(l.kid, "unit-key");
    LK_CHECK_STR(json_string_value(json_object_get(json_object_get(r, "principal"), "id")),
                 "alice@example.com");
    LK_CHECK_STR(json_string_value(json_object_get(json_object_get(r, "issuer"), "name")), "unit issuer");
    LK_CHECK_STR(json_string_value(json_object_get(r, "session")), "sess-unit-1");
    LK_CHECK(json_integer_value(json_object_get(r, "hops")) == 2);
    json_t *chain = json_object_get(r, "chain");
    LK_CHECK(json_array_size(chain) == 2);
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(chain, 0), "agent_id")), "planner");
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(chain, 1), "agent_id")), "web_search");
    LK_CHECK(json_integer_value(json_object_get(json_object_get(r, "scope"), "max_hops")) == 3);
    /* no signature material in the result */
    char *dump = json_dumps(r, 0);
    LK_CHECK(dump && !strstr(dump, "hop_signature") && !strstr(dump, "\"value\""));
    free(dump);
    json_decref(r);

    /* the raw JSON form (and the same token compact) verifies too */
    r = verify(TOKEN_JSON, strlen(TOKEN_JSON), 0, NOW_MS, &f);
    LK_CHECK_STR(reason_of(r), "ok");
    json_decref(r);
    char *enc = b64(TOKEN_JSON);
    r = verify(enc, strlen(enc), 0, NOW_MS, &f);
    LK_CHECK_STR(reason_of(r), "ok");
    json_decref(r);
    free(enc);
}

/* TOKEN_JSON with edit applied to the parsed token, re-encoded. */
static json_t *verify_edited(void (*edit)(json_t *), int mode, lk_hdp_facts_t *f)
{
    json_t *t = json_loads(TOKEN_JSON, 0, NULL);
    edit(t);
    char *s = json_dumps(t, JSON_COMPACT);
    char *enc = b64(s);
    json_t *r = verify(enc, strlen(enc), mode, NOW_MS, f);
    free(enc);
    free(s);
    json_decref(t);
    return r;
}

static void ed_intent(json_t *t)
{
    json_object_set_new(json_object_get(t, "scope"), "intent", json_string("Delete all sales data"));
}
static void ed_tools(json_t *t)
{
    json_array_append_new(json_object_get(json_object_get(t, "scope"), "authorized_tools"),
                          json_string("shell"));
}
static void ed_principal(json_t *t)
{
    json_object_set_new(json_object_get(t, "principal"), "id", json_string("mallory@example.com"));
}
static void ed_hop_summary(json_t *t)
{
    json_object_set_new(json_array_get(json_object_get(t, "chain"), 1), "action_summary",
                        json_string("other"));
}
static void ed_drop_first_hop(json_t *t)
{
    json_array_remove(json_object_get(t, "chain"), 0);
}
static void ed_drop_last_hop(json_t *t)
{
    json_array_remove(json_object_get(t, "chain"), 1);
}
static void ed_swap_hops(json_t *t)
{
    json_t *c = json_object_get(t, "chain");
    json_t *h0 = json_incref(json_array_get(c, 0));
    json_array_remove(c, 0);
    json_array_append_new(c, h0);
}
static void ed_kid(json_t *t)
{
    json_object_set_new(json_object_get(t, "signature"), "kid", json_string("someone-else"));
}
static void ed_alg(json_t *t)
{
    json_object_set_new(json_object_get(t, "signature"), "alg", json_string("ES256"));
}
static void ed_version(json_t *t)
{
    json_object_set_new(t, "hdp", json_string("0.2"));
}
static void ed_extra_field(json_t *t)
{
    json_object_set_new(t, "extra", json_true());
}
static void ed_seq_string(json_t *t)
{
    json_object_set_new(json_array_get(json_object_get(t, "chain"), 0), "seq", json_string("1"));
}

static void test_tampered(void)
{
    static const struct {
        void (*edit)(json_t *);
        int mode;
        const char *reason;
    } c[] = {
        {ed_intent, 0, "bad_signature"},
        {ed_tools, 0, "bad_signature"},
        {ed_principal, 0, "bad_signature"},
        {ed_hop_summary, 0, "chain_broken"},
        {ed_drop_first_hop, 0, "chain_broken"},
        {ed_swap_hops, 0, "chain_broken"},
        {ed_kid, 0, "unknown_issuer"},
        {ed_alg, 0, "unsupported_alg"},
        {ed_version, 0, "unsupported_version"},
        {ed_extra_field, 0, "malformed"},
        {ed_seq_string, 0, "malformed"},
        /* the documented limit: dropping hops from the end leaves a valid shorter chain */
        {ed_drop_last_hop, 0, "ok"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        lk_hdp_facts_t f;
        json_t *r = verify_edited(c[i].edit, c[i].mode, &f);
        if (!r || strcmp(reason_of(r), c[i].reason) != 0)
            fprintf(stderr, "  case %zu: got %s want %s\n", i, r ? reason_of(r) : "NULL", c[i].reason);
        LK_CHECK(r && strcmp(reason_of(r), c[i].reason) == 0);
        LK_CHECK(f.present && f.verified == (strcmp(c[i].reason, "ok") == 0));
        json_decref(r);
    }
}

static void test_issuers(void)
{
    static const struct {
        int mode;
        const char *reason;
    } c[] = {{1, "unknown_issuer"}, {2, "bad_signature"}, {3, "issuer_revoked"}, {4, "issuer_unavailable"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        lk_hdp_facts_t f;
        json_t *r = verify(TOKEN_HDR, strlen(TOKEN_HDR), c[i].mode, NOW_MS, &f);
        LK_CHECK(r && strcmp(reason_of(r), c[i].reason) == 0 && !f.verified);
        /* still summarized: who claims to have delegated */
        LK_CHECK_STR(json_string_value(json_object_get(json_object_get(r, "principal"), "id")),
                     "alice@example.com");
        json_decref(r);
    }
}

static void test_expired_and_over_hop(void)
{
    lk_hdp_facts_t f;
    json_t *t = json_loads(TOKEN_JSON, 0, NULL);
    int64_t exp = json_integer_value(json_object_get(json_object_get(t, "header"), "expires_at"));
    json_decref(t);
    json_t *r = verify(TOKEN_HDR, strlen(TOKEN_HDR), 0, exp + 1, &f);
    LK_CHECK_STR(reason_of(r), "expired");
    LK_CHECK(!f.verified);
    json_decref(r);
    r = verify(TOKEN_HDR, strlen(TOKEN_HDR), 0, exp, &f); /* the last valid millisecond */
    LK_CHECK_STR(reason_of(r), "ok");
    json_decref(r);

    r = verify(OVERHOP_HDR, strlen(OVERHOP_HDR), 0, NOW_MS, &f);
    LK_CHECK_STR(reason_of(r), "too_many_hops");
    LK_CHECK(json_integer_value(json_object_get(r, "hops")) == 2 && !f.verified);
    json_decref(r);
}

static void test_truncated(void)
{
    size_t n = strlen(TOKEN_HDR);
    lk_hdp_facts_t f;
    json_t *r = verify(TOKEN_HDR, n / 2, 0, NOW_MS, &f);
    LK_CHECK_STR(reason_of(r), "truncated");
    json_decref(r);
    /* every cut: never verified, always truncated or malformed */
    int bad = 0, trunc = 0;
    for (size_t k = 1; k < n; k += 7) {
        r = verify(TOKEN_HDR, k, 0, NOW_MS, &f);
        const char *why = r ? reason_of(r) : "NULL";
        if (strcmp(why, "truncated") == 0)
            trunc++;
        else if (strcmp(why, "malformed") != 0)
            bad++;
        json_decref(r);
    }
    LK_CHECK(bad == 0);
    LK_CHECK(trunc > (int)(n / 7) / 2);
}

static void test_scope(void)
{
    const char *defs[] = {"web_search", "shell"};
    const char *calls[] = {"file_reader", "delete_db", "delete_db"};
    lk_hdp_tools_t tools = {defs, 2, calls, 3};
    lk_hdp_facts_t f;
    lookup_t l = {0};
    json_t *r = lk_hdp_verify(TOKEN_HDR, strlen(TOKEN_HDR), NOW_MS, lookup, &l, &tools, &f);
    LK_CHECK_STR(reason_of(r), "ok");
    LK_CHECK(f.verified && f.scope_mismatch);
    LK_CHECK(json_is_true(json_object_get(r, "scope_mismatch")));
    json_t *m = json_object_get(r, "mismatches");
    LK_CHECK(json_array_size(m) == 2);
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "kind")), "tool_definition");
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "tool")), "shell");
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(m, 1), "kind")), "tool_call");
    LK_CHECK_STR(json_string_value(json_object_get(json_array_get(m, 1), "tool")), "delete_db");
    json_decref(r);
    /* all in scope */
    lk_hdp_tools_t ok = {defs, 1, calls, 1};
    r = lk_hdp_verify(TOKEN_HDR, strlen(TOKEN_HDR), NOW_MS, lookup, &l, &ok, &f);
    LK_CHECK(!f.scope_mismatch && json_array_size(json_object_get(r, "mismatches")) == 0);
    json_decref(r);
    /* no authorized_tools in the scope: no tool restriction */
    r = lk_hdp_verify(OVERHOP_HDR, strlen(OVERHOP_HDR), NOW_MS, lookup, &l, &tools, &f);
    LK_CHECK(!f.scope_mismatch);
    json_decref(r);
}

static void test_garbage(void)
{
    static const char *const g[] = {"",
                                    "   ",
                                    "!!!!",
                                    "e30",
                                    "{",
                                    "[]",
                                    "null",
                                    "eyJhIjoxfQ",
                                    "{\"a\":1,\"a\":2}",
                                    "%%%%%%%%",
                                    "{\"hdp\":\"0.1\"}"};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        lk_hdp_facts_t f;
        json_t *r = verify(g[i], strlen(g[i]), 0, NOW_MS, &f);
        LK_CHECK(r && !f.verified && f.present);
        const char *why = r ? reason_of(r) : "";
        LK_CHECK(strcmp(why, "malformed") == 0 || strcmp(why, "truncated") == 0);
        json_decref(r);
    }
    /* deep nesting is refused, not recursed into */
    char deep[400];
    size_t k = 0;
    for (int i = 0; i < 150; i++)
        deep[k++] = '[';
    for (int i = 0; i < 150; i++)
        deep[k++] = ']';
    deep[k] = '\0';
    lk_hdp_facts_t f;
    json_t *r = verify(deep, k, 0, NOW_MS, &f);
    LK_CHECK_STR(reason_of(r), "malformed");
    json_decref(r);
    /* oversized */
    size_t big = LK_HDP_MAX_HEADER + 10;
    char *s = malloc(big);
    memset(s, 'A', big);
    r = verify(s, big, 0, NOW_MS, &f);
    LK_CHECK_STR(reason_of(r), "malformed");
    json_decref(r);
    free(s);
}

static void test_pubkey(void)
{
    unsigned char a[32], b[32], c[32];
    LK_CHECK(lk_hdp_parse_pubkey(PK_B64URL, a) == 0);
    LK_CHECK(lk_hdp_parse_pubkey("A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", b) == 0);
    LK_CHECK(memcmp(a, b, 32) == 0);
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, a, 32);
    LK_CHECK(lk_hdp_parse_pubkey(hex, c) == 0 && memcmp(a, c, 32) == 0);
    LK_CHECK(lk_hdp_parse_pubkey("", c) != 0);
    LK_CHECK(lk_hdp_parse_pubkey("AAAA", c) != 0);
    LK_CHECK(lk_hdp_parse_pubkey("A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbgAA", c) != 0);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    LK_RUN(test_jcs_rfc_examples);
    LK_RUN(test_jcs_numbers);
    LK_RUN(test_reference_token_verifies);
    LK_RUN(test_tampered);
    LK_RUN(test_issuers);
    LK_RUN(test_expired_and_over_hop);
    LK_RUN(test_truncated);
    LK_RUN(test_scope);
    LK_RUN(test_garbage);
    LK_RUN(test_pubkey);
    return LK_TEST_DONE();
}
