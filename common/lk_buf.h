/*  lk_buf - a growable byte buffer, optionally in guarded secret memory.
 *
 *  A secure buffer lives in sodium_malloc memory; growing it copies into a
 *  new guarded region and wipes the old one, and lk_buf_free wipes it. Use a
 *  secure buffer for anything that carries a key or a credential.
 */
#ifndef LK_BUF_H
#define LK_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    int secure;
} lk_buf_t;

void lk_buf_init(lk_buf_t *self, int secure);
/* Ensures room for n more bytes. 0 / -1 (out of memory). */
int lk_buf_reserve(lk_buf_t *self, size_t n) __attribute__((warn_unused_result));
int lk_buf_append(lk_buf_t *self, const void *data, size_t n) __attribute__((warn_unused_result));
/* Drops the contents (wiped if secure), keeps the memory. */
void lk_buf_reset(lk_buf_t *self);
/* Frees (and wipes, if secure). Safe to call twice. */
void lk_buf_free(lk_buf_t *self);
/* Releases a secure buffer's block (data, cap) that was taken out of its
 * lk_buf_t, from any thread (e.g. a ZeroMQ free callback): wiped at once, then
 * parked in a small shared pool for reuse (still guarded and locked) or freed. */
void lk_buf_secure_release(void *block, size_t cap);

#endif
