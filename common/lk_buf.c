/*  lk_buf - a growable byte buffer, optionally in guarded secret memory. */
#include "lk_buf.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

void lk_buf_init(lk_buf_t *self, int secure)
{
    memset(self, 0, sizeof(*self));
    self->secure = secure;
}

int lk_buf_reserve(lk_buf_t *self, size_t n)
{
    if (self->cap - self->len >= n) return 0;
    size_t want = self->cap ? self->cap : 256;
    while (want - self->len < n) {
        if (want > SIZE_MAX / 2) return -1;
        want *= 2;
    }
    uint8_t *p;
    if (self->secure) {
        p = sodium_malloc(want);
        if (!p) return -1;
        if (self->len) memcpy(p, self->data, self->len);
        if (self->data) sodium_free(self->data); /* wipes */
    } else {
        p = realloc(self->data, want);
        if (!p) return -1;
    }
    self->data = p;
    self->cap = want;
    return 0;
}

int lk_buf_append(lk_buf_t *self, const void *data, size_t n)
{
    if (lk_buf_reserve(self, n) != 0) return -1;
    if (n) memcpy(self->data + self->len, data, n);
    self->len += n;
    return 0;
}

void lk_buf_reset(lk_buf_t *self)
{
    if (self->secure && self->data) sodium_memzero(self->data, self->len);
    self->len = 0;
}

void lk_buf_free(lk_buf_t *self)
{
    if (self->data) {
        if (self->secure)
            sodium_free(self->data);
        else
            free(self->data);
    }
    self->data = NULL;
    self->len = self->cap = 0;
}
