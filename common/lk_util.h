/*  lk_util - clocks and identifiers shared by every process.
 *
 *  Request ids ("req_" + 24 hex), random and derived UUIDs. Knows nothing
 *  of the services.
 */
#ifndef LK_UTIL_H
#define LK_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define LK_RID_LEN  28 /* "req_" + 24 hex chars */
#define LK_UUID_LEN 36 /* 8-4-4-4-12 */

/* Wall clock, milliseconds since the epoch. */
int64_t lk_now_ms(void);
/* Monotonic clock, microseconds. */
int64_t lk_mono_us(void);

/* out: LK_RID_LEN + 1 bytes. */
void lk_rid_new(char *out);
/* Random (v4) UUID. out: LK_UUID_LEN + 1 bytes. */
void lk_uuid_random(char *out);
/* Name-based UUID (BLAKE2b of the parts, version 8 bits): the same parts always
 * give the same UUID, so a retried event keeps its id. out: LK_UUID_LEN + 1. */
void lk_uuid_derive(char *out, const char *a, const char *b);
/* Lower-case hex of n bytes into out (2n + 1). */
void lk_hex(char *out, const uint8_t *in, size_t n);

#endif
