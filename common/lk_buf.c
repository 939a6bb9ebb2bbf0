/*  lk_buf - a growable byte buffer, optionally in guarded secret memory. */
#include "lk_buf.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* Guarded blocks are costly to make: sodium_malloc maps the block between two
 * guard pages and mlocks it, sodium_free unlocks and unmaps it (about six
 * system calls each way). A secure buffer is made for every request that
 * carries a credential, so released blocks of the common sizes (256 B .. 4 KiB)
 * are parked for reuse in one small pool behind a mutex: wiped when released,
 * still guarded and locked while parked, bounded; other sizes are freed at
 * once. The pool is shared by every thread because a block handed to ZeroMQ
 * (a secret reply sent zero-copy) is released in ZeroMQ's I/O thread
 * (lk_buf_secure_release), not in the thread that made it. */
#define POOL_CLASSES 5 /* 256, 512, 1024, 2048, 4096 */
#define POOL_DEPTH   32
static struct {
    pthread_mutex_t lock;
    uint8_t *blk[POOL_CLASSES][POOL_DEPTH];
    int n[POOL_CLASSES];
} g_pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int pool_class(size_t cap)
{
    for (int c = 0; c < POOL_CLASSES; c++)
        if (cap == (size_t)256 << c) return c;
    return -1;
}

static uint8_t *secure_alloc(size_t cap)
{
    int c = pool_class(cap);
    uint8_t *p = NULL;
    if (c >= 0) {
        pthread_mutex_lock(&g_pool.lock);
        if (g_pool.n[c] > 0) p = g_pool.blk[c][--g_pool.n[c]];
        pthread_mutex_unlock(&g_pool.lock);
    }
    return p ? p : sodium_malloc(cap);
}

void lk_buf_secure_release(void *block, size_t cap)
{
    if (!block) return;
    uint8_t *p = block;
    int c = pool_class(cap);
    sodium_memzero(p, cap);
    if (c >= 0) {
        int parked = 0;
        pthread_mutex_lock(&g_pool.lock);
        if (g_pool.n[c] < POOL_DEPTH) {
            g_pool.blk[c][g_pool.n[c]++] = p;
            parked = 1;
        }
        pthread_mutex_unlock(&g_pool.lock);
        if (parked) return;
    }
    sodium_free(p); /* wipes again, unlocks, unmaps */
}

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
        p = secure_alloc(want);
        if (!p) return -1;
        if (self->len) memcpy(p, self->data, self->len);
        if (self->data) lk_buf_secure_release(self->data, self->cap); /* wipes */
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
            lk_buf_secure_release(self->data, self->cap); /* wipes */
        else
            free(self->data);
    }
    self->data = NULL;
    self->len = self->cap = 0;
}
