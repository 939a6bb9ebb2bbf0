/*  test_buf - lk_buf, plain and secure: growth, reset, double free. */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "lk_buf.h"
#include "lk_test.h"

static void grow_and_keep(int secure)
{
    lk_buf_t b;
    lk_buf_init(&b, secure);
    LK_CHECK(b.data == NULL && b.len == 0 && b.cap == 0 && b.secure == secure);
    LK_CHECK(lk_buf_append(&b, NULL, 0) == 0);
    LK_CHECK(b.len == 0);
    /* 100 000 bytes in odd-sized pieces: crosses many doublings */
    uint8_t piece[97];
    size_t total = 0;
    int ok = 1;
    while (total < 100000) {
        for (size_t i = 0; i < sizeof piece; i++)
            piece[i] = (uint8_t)(total + i);
        if (lk_buf_append(&b, piece, sizeof piece) != 0) ok = 0;
        total += sizeof piece;
    }
    LK_CHECK(ok);
    LK_CHECK(b.len == total && b.cap >= b.len);
    int same = 1;
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] != (uint8_t)i) same = 0;
    LK_CHECK(same);

    size_t cap = b.cap;
    uint8_t *data = b.data;
    LK_CHECK(lk_buf_reserve(&b, cap - b.len) == 0); /* fits: no move */
    LK_CHECK(b.cap == cap && b.data == data);
    LK_CHECK(lk_buf_reserve(&b, (size_t)-1) == -1); /* impossible: refused, contents kept */
    LK_CHECK(b.len == total && b.data == data);

    lk_buf_reset(&b);
    LK_CHECK(b.len == 0 && b.cap == cap && b.data == data);
    if (secure) LK_CHECK(sodium_is_zero(b.data, total)); /* reset wipes a secure buffer */
    LK_CHECK(lk_buf_append(&b, "abc", 3) == 0);
    LK_CHECK(b.len == 3 && memcmp(b.data, "abc", 3) == 0 && b.data == data);

    lk_buf_free(&b);
    LK_CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    lk_buf_free(&b); /* twice is fine */
    LK_CHECK(b.data == NULL);
    /* usable again after free */
    LK_CHECK(lk_buf_append(&b, "x", 1) == 0 && b.len == 1 && b.data[0] == 'x');
    lk_buf_free(&b);
}

static void plain(void)
{
    grow_and_keep(0);
}

static void secure(void)
{
    grow_and_keep(1);
}

static void first_reserve(void)
{
    lk_buf_t b;
    lk_buf_init(&b, 0);
    LK_CHECK(lk_buf_reserve(&b, 1) == 0 && b.cap >= 1);
    LK_CHECK(lk_buf_reserve(&b, 5000) == 0 && b.cap >= 5000);
    lk_buf_free(&b);
    lk_buf_free(&b);
    lk_buf_init(&b, 1);
    lk_buf_free(&b); /* never allocated */
    LK_CHECK(b.data == NULL);
}

/* Released secure blocks are parked for reuse: a reused block must come back
 * wiped, and a parked block is still guarded memory (reading past its end
 * would fault; not exercised here). */
static void secure_reuse_is_wiped(void)
{
    lk_buf_t a, b;
    lk_buf_init(&a, 1);
    LK_CHECK(lk_buf_append(&a, "Authorization: Bearer sk-secret-0123456789", 42) == 0);
    uint8_t *first = a.data;
    size_t cap = a.cap;
    lk_buf_free(&a);
    lk_buf_init(&b, 1);
    LK_CHECK(lk_buf_reserve(&b, 10) == 0);
    LK_CHECK(b.cap == cap);
    LK_CHECK(b.data == first);             /* the parked block was reused */
    LK_CHECK(sodium_is_zero(b.data, cap)); /* and nothing of the old secret is left */
    /* growing releases the small block into the pool: wiped there too */
    LK_CHECK(lk_buf_append(&b, "0123456789", 10) == 0);
    uint8_t *small = b.data;
    LK_CHECK(lk_buf_reserve(&b, 1000) == 0 && b.data != small);
    lk_buf_t c;
    lk_buf_init(&c, 1);
    LK_CHECK(lk_buf_reserve(&c, 1) == 0 && c.data == small && sodium_is_zero(c.data, c.cap));
    lk_buf_free(&b);
    lk_buf_free(&c);
}

/* A secret reply's block is released in ZeroMQ's I/O thread (the free
 * callback) and drawn again in the worker thread: through the shared pool. */
typedef struct {
    uint8_t *blocks[40];
    size_t n, cap;
    int wiped;  /* blocks taken that were all zero: from a pool (sodium_malloc fills new ones with 0xdb) */
    int reused; /* of those, blocks released by another thread */
} xfer_t;

static void *release_all(void *arg)
{
    xfer_t *x = arg;
    for (size_t i = 0; i < x->n; i++)
        lk_buf_secure_release(x->blocks[i], x->cap);
    return NULL;
}

static void *take_all(void *arg)
{
    xfer_t *x = arg;
    x->wiped = x->reused = 0;
    lk_buf_t got[40];
    for (size_t i = 0; i < x->n; i++) {
        lk_buf_init(&got[i], 1);
        if (lk_buf_reserve(&got[i], x->cap) != 0 || got[i].cap != x->cap) continue;
        if (!sodium_is_zero(got[i].data, got[i].cap)) continue;
        x->wiped++;
        for (size_t j = 0; j < x->n; j++)
            if (got[i].data == x->blocks[j]) x->reused++;
    }
    for (size_t i = 0; i < x->n; i++) { /* back to the pool */
        lk_buf_secure_release(got[i].data, got[i].cap);
        got[i].data = NULL;
    }
    return NULL;
}

static void run_thread(void *(*fn)(void *), xfer_t *x)
{
    pthread_t t;
    LK_CHECK(pthread_create(&t, NULL, fn, x) == 0);
    pthread_join(t, NULL);
}

static void shared_pool_across_threads(void)
{
    xfer_t x;
    memset(&x, 0, sizeof x);
    /* one block, filled with a secret here, released in another thread,
     * taken in a third: the same block, wiped */
    lk_buf_t a;
    lk_buf_init(&a, 1);
    char secret[1500];
    memset(secret, 'k', sizeof secret);
    LK_CHECK(lk_buf_append(&a, secret, sizeof secret) == 0 && a.cap == 2048);
    x.blocks[0] = a.data;
    x.cap = a.cap;
    x.n = 1;
    a.data = NULL; /* handed over, as to zmq_msg_init_data */
    a.len = a.cap = 0;
    run_thread(release_all, &x);
    run_thread(take_all, &x);
    LK_CHECK(x.wiped == 1 && x.reused == 1);

    /* bounded: of 40 blocks released elsewhere, the pool keeps at most 32 */
    x.n = 40;
    x.cap = 512;
    for (size_t i = 0; i < x.n; i++) {
        lk_buf_t b;
        lk_buf_init(&b, 1);
        LK_CHECK(lk_buf_append(&b, secret, 300) == 0 && b.cap == 512);
        x.blocks[i] = b.data;
    }
    run_thread(release_all, &x);
    run_thread(take_all, &x);
    LK_CHECK(x.wiped == 32 && x.reused == 32);

    /* a block of no pooled size is freed at once (and NULL is ignored) */
    lk_buf_t big;
    lk_buf_init(&big, 1);
    LK_CHECK(lk_buf_reserve(&big, 10000) == 0 && big.cap == 16384);
    lk_buf_secure_release(big.data, big.cap);
    lk_buf_secure_release(NULL, 256);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    LK_RUN(plain);
    LK_RUN(secure);
    LK_RUN(first_reserve);
    LK_RUN(secure_reuse_is_wiped);
    LK_RUN(shared_pool_across_threads);
    return LK_TEST_DONE();
}
