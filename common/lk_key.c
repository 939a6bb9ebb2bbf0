/*  lk_key - the Lumkey key format: generate and check. */
#include "lk_key.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char B62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static const struct {
    lk_key_kind_t kind;
    const char *prefix;
} PREFIXES[] = {{LK_KEY_LIVE, "lk_live_"}, {LK_KEY_TEST, "lk_test_"}, {LK_KEY_ADMIN, "lk_adm_"}};

static uint32_t crc32(const char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= (uint8_t)p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void crc_b62(uint32_t v, char out[LK_KEY_CRC_LEN])
{
    for (int i = LK_KEY_CRC_LEN - 1; i >= 0; i--) {
        out[i] = B62[v % 62];
        v /= 62;
    }
}

static int is_b62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

lk_key_err_t lk_key_parse(const char *s, size_t len, lk_key_info_t *info)
{
    if (!s || len == 0) return LK_KEY_ERR_EMPTY;
    size_t plen = 0;
    lk_key_kind_t kind = 0;
    for (size_t i = 0; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++) {
        size_t n = strlen(PREFIXES[i].prefix);
        if (len >= n && memcmp(s, PREFIXES[i].prefix, n) == 0) {
            plen = n;
            kind = PREFIXES[i].kind;
            break;
        }
    }
    if (!kind) return LK_KEY_ERR_PREFIX;
    if (len != plen + LK_KEY_ID_LEN + LK_KEY_SECRET_LEN + LK_KEY_CRC_LEN) return LK_KEY_ERR_LENGTH;
    for (size_t i = plen; i < len; i++)
        if (!is_b62(s[i])) return LK_KEY_ERR_CHARSET;
    char want[LK_KEY_CRC_LEN];
    crc_b62(crc32(s, len - LK_KEY_CRC_LEN), want);
    if (memcmp(want, s + len - LK_KEY_CRC_LEN, LK_KEY_CRC_LEN) != 0) return LK_KEY_ERR_CHECKSUM;
    if (info) {
        info->kind = kind;
        memcpy(info->id, s + plen, LK_KEY_ID_LEN);
        info->id[LK_KEY_ID_LEN] = '\0';
    }
    return LK_KEY_OK;
}

const char *lk_key_strerror(lk_key_err_t err)
{
    switch (err) {
    case LK_KEY_OK:
        return "ok";
    case LK_KEY_ERR_EMPTY:
        return "no API key was provided";
    case LK_KEY_ERR_PREFIX:
        return "the API key does not have a Lumkey prefix";
    case LK_KEY_ERR_LENGTH:
        return "the API key has the wrong length";
    case LK_KEY_ERR_CHARSET:
        return "the API key contains characters that are not allowed";
    case LK_KEY_ERR_CHECKSUM:
        return "the API key checksum does not match";
    }
    return "malformed API key";
}

void lk_key_generate(lk_key_kind_t kind, char *out, char *id)
{
    const char *prefix = "lk_live_";
    for (size_t i = 0; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++)
        if (PREFIXES[i].kind == kind) prefix = PREFIXES[i].prefix;
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    for (int i = 0; i < LK_KEY_ID_LEN + LK_KEY_SECRET_LEN; i++)
        out[p++] = B62[randombytes_uniform(62)];
    crc_b62(crc32(out, p), out + p);
    p += LK_KEY_CRC_LEN;
    out[p] = '\0';
    if (id) {
        memcpy(id, out + strlen(prefix), LK_KEY_ID_LEN);
        id[LK_KEY_ID_LEN] = '\0';
    }
}

void lk_key_public_id(const lk_key_info_t *info, char *out, size_t cap)
{
    snprintf(out, cap, "key_%s", info->id);
}
