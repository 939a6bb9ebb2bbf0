/*  lk_util - clocks and identifiers shared by every process. */
#include "lk_util.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t lk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lk_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void lk_hex(char *out, const uint8_t *in, size_t n)
{
    static const char H[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = H[in[i] >> 4];
        out[2 * i + 1] = H[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void lk_rid_new(char *out)
{
    uint8_t r[12];
    randombytes_buf(r, sizeof r);
    memcpy(out, "req_", 4);
    lk_hex(out + 4, r, sizeof r);
}

static void format_uuid(char *out, uint8_t u[16])
{
    /* 8-4-4-4-12 hex digits; on every request path, so no printf */
    static const uint8_t groups[] = {4, 2, 2, 2, 6};
    size_t o = 0, i = 0;
    for (size_t g = 0; g < sizeof groups; g++) {
        if (g) out[o++] = '-';
        lk_hex(out + o, u + i, groups[g]);
        o += 2u * groups[g];
        i += groups[g];
    }
    out[o] = '\0';
}

void lk_uuid_random(char *out)
{
    uint8_t u[16];
    randombytes_buf(u, sizeof u);
    u[6] = (uint8_t)((u[6] & 0x0F) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3F) | 0x80);
    format_uuid(out, u);
}

void lk_uuid_derive(char *out, const char *a, const char *b)
{
    uint8_t u[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, (const uint8_t *)"lumkey-uuid", 11, sizeof u);
    crypto_generichash_update(&st, (const uint8_t *)a, strlen(a) + 1);
    crypto_generichash_update(&st, (const uint8_t *)b, strlen(b) + 1);
    crypto_generichash_final(&st, u, sizeof u);
    u[6] = (uint8_t)((u[6] & 0x0F) | 0x80);
    u[8] = (uint8_t)((u[8] & 0x3F) | 0x80);
    format_uuid(out, u);
}
