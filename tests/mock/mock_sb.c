/*  mock_sb - an append-only byte string for building response bodies. */
#include "mock_sb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mock_sb_init(mock_sb_t *sb, h2o_mem_pool_t *pool, size_t cap)
{
    sb->pool = pool;
    sb->len = 0;
    sb->cap = cap ? cap : 64;
    sb->base = pool ? h2o_mem_alloc_pool(pool, sb->cap) : malloc(sb->cap);
    if (sb->base == NULL) {
        fputs("lumkey-mock: out of memory\n", stderr);
        abort();
    }
}

void mock_sb_reset(mock_sb_t *sb)
{
    sb->len = 0;
}

static void grow(mock_sb_t *sb, size_t need)
{
    size_t cap = sb->cap * 2;
    while (cap < sb->len + need)
        cap *= 2;
    char *p;
    if (sb->pool) {
        p = h2o_mem_alloc_pool(sb->pool, cap);
        memcpy(p, sb->base, sb->len);
    } else {
        p = realloc(sb->base, cap);
    }
    if (p == NULL) {
        fputs("lumkey-mock: out of memory\n", stderr);
        abort();
    }
    sb->base = p;
    sb->cap = cap;
}

void mock_sb_add(mock_sb_t *sb, const void *s, size_t n)
{
    if (n == 0) return;
    if (sb->cap - sb->len < n) grow(sb, n);
    memcpy(sb->base + sb->len, s, n);
    sb->len += n;
}

void mock_sb_u64(mock_sb_t *sb, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    mock_sb_add(sb, tmp + i, sizeof(tmp) - i);
}

size_t mock_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void mock_sb_json_str(mock_sb_t *sb, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    /* worst case: every byte becomes \ufffd (6 bytes) */
    if (sb->cap - sb->len < n * 6 + 2) grow(sb, n * 6 + 2);
    char *d = sb->base + sb->len;
    *d++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *d++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = mock_utf8_seq(s + i, n - i);
            if (k == 0) {
                memcpy(d, "\\ufffd", 6);
                d += 6;
                i++;
            } else {
                memcpy(d, s + i, k);
                d += k;
                i += k;
            }
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '"':
            *d++ = '"';
            break;
        case '\\':
            *d++ = '\\';
            break;
        case '\n':
            *d++ = 'n';
            break;
        case '\r':
            *d++ = 'r';
            break;
        case '\t':
            *d++ = 't';
            break;
        case '\b':
            *d++ = 'b';
            break;
        case '\f':
            *d++ = 'f';
            break;
        default:
            *d++ = 'u';
            *d++ = '0';
            *d++ = '0';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 15];
        }
        i++;
    }
    *d++ = '"';
    sb->len = (size_t)(d - sb->base);
}
