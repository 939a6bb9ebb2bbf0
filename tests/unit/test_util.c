/*  test_util - request ids, UUIDs (random v4, derived), hex, clocks. */
#include <sodium.h>
#include <string.h>

#include "lk_test.h"
#include "lk_util.h"

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* 8-4-4-4-12 lower-case hex, version nibble v, RFC 4122 variant. */
static int uuid_ok(const char *u, char version)
{
    if (strlen(u) != LK_UUID_LEN) return 0;
    for (int i = 0; i < LK_UUID_LEN; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? u[i] != '-' : !is_lower_hex(u + i, 1)) return 0;
    }
    return u[14] == version && strchr("89ab", u[19]) != NULL;
}

static void rid(void)
{
    char a[LK_RID_LEN + 1], b[LK_RID_LEN + 1];
    memset(a, 'X', sizeof a);
    lk_rid_new(a);
    lk_rid_new(b);
    LK_CHECK(strlen(a) == LK_RID_LEN);
    LK_CHECK(strncmp(a, "req_", 4) == 0);
    LK_CHECK(is_lower_hex(a + 4, LK_RID_LEN - 4));
    LK_CHECK(strcmp(a, b) != 0);
}

static void uuid_random(void)
{
    char a[LK_UUID_LEN + 1], b[LK_UUID_LEN + 1];
    int ok = 1;
    for (int i = 0; i < 200; i++) {
        lk_uuid_random(a);
        if (!uuid_ok(a, '4')) ok = 0;
    }
    LK_CHECK(ok);
    lk_uuid_random(b);
    LK_CHECK(strcmp(a, b) != 0);
}

static void uuid_derived(void)
{
    char a[LK_UUID_LEN + 1], b[LK_UUID_LEN + 1], c[LK_UUID_LEN + 1], d[LK_UUID_LEN + 1];
    lk_uuid_derive(a, "req_0123", "request.accepted");
    lk_uuid_derive(b, "req_0123", "request.accepted");
    LK_CHECK(uuid_ok(a, '8'));
    LK_CHECK_STR(a, b); /* same parts, same id: a retried event keeps its id */
    lk_uuid_derive(c, "req_0123", "request.completed");
    LK_CHECK(uuid_ok(c, '8') && strcmp(a, c) != 0);
    lk_uuid_derive(c, "req_0124", "request.accepted");
    LK_CHECK(strcmp(a, c) != 0);
    /* the parts are separated: ("ab", "c") and ("a", "bc") differ */
    lk_uuid_derive(c, "ab", "c");
    lk_uuid_derive(d, "a", "bc");
    LK_CHECK(strcmp(c, d) != 0);
    lk_uuid_derive(c, "", "");
    LK_CHECK(uuid_ok(c, '8'));
}

static void hex_and_clocks(void)
{
    char out[9];
    const uint8_t in[4] = {0x00, 0x9f, 0xa0, 0xff};
    lk_hex(out, in, sizeof in);
    LK_CHECK_STR(out, "009fa0ff");
    lk_hex(out, in, 0);
    LK_CHECK_STR(out, "");
    int64_t t = lk_now_ms();
    LK_CHECK(t > 1600000000000LL); /* after 2020 */
    int64_t m1 = lk_mono_us(), m2 = lk_mono_us();
    LK_CHECK(m2 >= m1 && m1 > 0);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    LK_RUN(rid);
    LK_RUN(uuid_random);
    LK_RUN(uuid_derived);
    LK_RUN(hex_and_clocks);
    return LK_TEST_DONE();
}
