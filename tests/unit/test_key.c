/*  test_key - the key format: generate, parse, and every class of malformed key. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "lk_key.h"
#include "lk_test.h"

static lk_key_err_t parse(const char *s, size_t len)
{
    /* an exact-size copy, so ASan sees any read past len */
    char *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, s, len);
    lk_key_info_t info;
    lk_key_err_t err = lk_key_parse(copy, len, &info);
    free(copy);
    return err;
}

static void generate_and_parse(void)
{
    static const struct {
        lk_key_kind_t kind;
        const char *prefix;
    } KINDS[] = {{LK_KEY_LIVE, "lk_live_"}, {LK_KEY_TEST, "lk_test_"}, {LK_KEY_ADMIN, "lk_adm_"}};
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++) {
        char key[LK_KEY_MAX_LEN], id[LK_KEY_ID_LEN + 1];
        lk_key_generate(KINDS[i].kind, key, id);
        size_t plen = strlen(KINDS[i].prefix);
        LK_CHECK(strncmp(key, KINDS[i].prefix, plen) == 0);
        LK_CHECK(strlen(key) == plen + LK_KEY_ID_LEN + LK_KEY_SECRET_LEN + LK_KEY_CRC_LEN);
        LK_CHECK(strlen(key) < LK_KEY_MAX_LEN);
        LK_CHECK(strlen(id) == LK_KEY_ID_LEN && memcmp(key + plen, id, LK_KEY_ID_LEN) == 0);
        lk_key_info_t info;
        memset(&info, 0, sizeof info);
        LK_CHECK(lk_key_parse(key, strlen(key), &info) == LK_KEY_OK);
        LK_CHECK(info.kind == KINDS[i].kind);
        LK_CHECK_STR(info.id, id);
        LK_CHECK(lk_key_parse(key, strlen(key), NULL) == LK_KEY_OK);
        LK_CHECK(parse(key, strlen(key)) == LK_KEY_OK);
        char pub[24];
        lk_key_public_id(&info, pub, sizeof pub);
        LK_CHECK(strncmp(pub, "key_", 4) == 0 && strcmp(pub + 4, id) == 0);
    }
}

static void malformed(void)
{
    char key[LK_KEY_MAX_LEN], bad[LK_KEY_MAX_LEN + 8], id[LK_KEY_ID_LEN + 1];
    lk_key_generate(LK_KEY_LIVE, key, id);
    size_t len = strlen(key);
    const size_t body = 8; /* first character after "lk_live_" */

    /* empty */
    LK_CHECK(lk_key_parse("", 0, NULL) == LK_KEY_ERR_EMPTY);
    LK_CHECK(lk_key_parse(NULL, 0, NULL) == LK_KEY_ERR_EMPTY);
    LK_CHECK(lk_key_parse(key, 0, NULL) == LK_KEY_ERR_EMPTY);

    /* bad checksum: any single base62 character changed, in id, secret or checksum */
    size_t positions[] = {body, body + LK_KEY_ID_LEN, len - LK_KEY_CRC_LEN - 1, len - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        memcpy(bad, key, len + 1);
        bad[positions[i]] = bad[positions[i]] == 'a' ? 'b' : 'a';
        LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHECKSUM);
    }
    /* every position after the prefix, one at a time */
    int all = 1;
    for (size_t p = body; p < len; p++) {
        memcpy(bad, key, len + 1);
        bad[p] = bad[p] == 'Z' ? 'Y' : 'Z';
        if (parse(bad, len) != LK_KEY_ERR_CHECKSUM) all = 0;
    }
    LK_CHECK(all);

    /* wrong prefix */
    memcpy(bad, key, len + 1);
    memcpy(bad, "lk_prod_", 8);
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_PREFIX);
    memcpy(bad, key, len + 1);
    bad[0] = 'L';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_PREFIX);
    LK_CHECK(parse("sk-proj-abcdefghijklmnopqrstuvwxyz", 34) == LK_KEY_ERR_PREFIX);
    LK_CHECK(parse("lk_live", 7) == LK_KEY_ERR_PREFIX);
    /* a live key relabelled as a test key: prefix fine, checksum covers it */
    memcpy(bad, key, len + 1);
    memcpy(bad, "lk_test_", 8);
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHECKSUM);

    /* truncated (every length short of the full key) and too long */
    all = 1;
    for (size_t n = 8; n < len; n++)
        if (parse(key, n) != LK_KEY_ERR_LENGTH) all = 0;
    LK_CHECK(all);
    memcpy(bad, key, len);
    bad[len] = 'A';
    LK_CHECK(parse(bad, len + 1) == LK_KEY_ERR_LENGTH);

    /* leading / trailing whitespace */
    bad[0] = ' ';
    memcpy(bad + 1, key, len);
    LK_CHECK(parse(bad, len + 1) == LK_KEY_ERR_PREFIX);
    memcpy(bad, key, len);
    bad[len] = '\n';
    LK_CHECK(parse(bad, len + 1) == LK_KEY_ERR_LENGTH);
    memcpy(bad, key, len);
    bad[len] = ' ';
    LK_CHECK(parse(bad, len + 1) == LK_KEY_ERR_LENGTH);
    /* whitespace inside, same length */
    memcpy(bad, key, len + 1);
    bad[body + 3] = ' ';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);
    memcpy(bad, key, len + 1);
    bad[len - 1] = '\t';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);

    /* look-alikes: Cyrillic o (U+043E, d0 be) in place of one char (one byte longer) ... */
    memcpy(bad, key, body + 2);
    bad[body + 2] = (char)0xd0;
    bad[body + 3] = (char)0xbe;
    memcpy(bad + body + 4, key + body + 3, len - body - 3);
    LK_CHECK(parse(bad, len + 1) == LK_KEY_ERR_LENGTH);
    /* ... or in place of two chars (same length) */
    memcpy(bad, key, len + 1);
    bad[body + 2] = (char)0xd0;
    bad[body + 3] = (char)0xbe;
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);
    /* '0' <-> 'O' swap is valid base62, so the checksum catches it */
    memcpy(bad, key, len + 1);
    bad[body + 5] = bad[body + 5] == '0' ? 'O' : '0';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHECKSUM);
    memcpy(bad, key, len + 1);
    bad[body + 6] = bad[body + 6] == 'l' ? '1' : 'l';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHECKSUM);
    /* '-' and '_' are not base62 */
    memcpy(bad, key, len + 1);
    bad[body + 4] = '-';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);
    memcpy(bad, key, len + 1);
    bad[len - 2] = '_';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);

    /* embedded NUL */
    memcpy(bad, key, len + 1);
    bad[body + 10] = '\0';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);
    memcpy(bad, key, len + 1);
    bad[len - 1] = '\0';
    LK_CHECK(parse(bad, len) == LK_KEY_ERR_CHARSET);

    /* every error has a message, and none of them repeats the key */
    for (int e = LK_KEY_OK; e <= LK_KEY_ERR_CHECKSUM; e++) {
        const char *msg = lk_key_strerror((lk_key_err_t)e);
        LK_CHECK(msg && msg[0]);
        LK_CHECK(strstr(msg, id) == NULL);
    }
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void distinct(void)
{
    enum { N = 1000 };
    char(*keys)[LK_KEY_MAX_LEN] = calloc(N, LK_KEY_MAX_LEN);
    char(*ids)[LK_KEY_ID_LEN + 1] = calloc(N, LK_KEY_ID_LEN + 1);
    int all_ok = 1;
    for (int i = 0; i < N; i++) {
        lk_key_generate(i % 3 == 2 ? LK_KEY_ADMIN : LK_KEY_LIVE, keys[i], ids[i]);
        if (lk_key_parse(keys[i], strlen(keys[i]), NULL) != LK_KEY_OK) all_ok = 0;
    }
    LK_CHECK(all_ok);
    qsort(keys, N, LK_KEY_MAX_LEN, cmp_keys);
    qsort(ids, N, LK_KEY_ID_LEN + 1, cmp_keys);
    int dup_key = 0, dup_id = 0;
    for (int i = 1; i < N; i++) {
        dup_key += strcmp(keys[i - 1], keys[i]) == 0;
        dup_id += strcmp(ids[i - 1], ids[i]) == 0;
    }
    LK_CHECK(dup_key == 0);
    LK_CHECK(dup_id == 0);
    free(keys);
    free(ids);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    LK_RUN(generate_and_parse);
    LK_RUN(malformed);
    LK_RUN(distinct);
    return LK_TEST_DONE();
}
