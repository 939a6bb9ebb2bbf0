/*  test_edge_keycache - the edge's cache of vault key hashes. */
#include <string.h>

#include "edge_keycache.h"
#include "lk_test.h"

static void hit_miss_expire_drop(void)
{
    edge_keycache_t *c = edge_keycache_new(64, 1000);
    uint8_t t1[EDGE_KEYCACHE_TAG_LEN], t2[EDGE_KEYCACHE_TAG_LEN], h[LK_PROTO_HASH_LEN],
        out[LK_PROTO_HASH_LEN];
    memset(h, 0xAB, sizeof h);
    edge_keycache_tag(c, "lk_live_one", 11, t1);
    edge_keycache_tag(c, "lk_live_two", 11, t2);
    LK_CHECK(memcmp(t1, t2, sizeof t1) != 0);
    LK_CHECK(edge_keycache_get(c, t1, 0, out) == 0); /* empty */
    edge_keycache_put(c, t1, h, 0);
    LK_CHECK(edge_keycache_get(c, t1, 999, out) == 1 && memcmp(out, h, sizeof h) == 0);
    LK_CHECK(edge_keycache_get(c, t2, 999, out) == 0);  /* another key */
    LK_CHECK(edge_keycache_get(c, t1, 1000, out) == 0); /* expired */
    edge_keycache_put(c, t1, h, 2000);
    edge_keycache_drop(c, t1);
    LK_CHECK(edge_keycache_get(c, t1, 2001, out) == 0); /* dropped after a refusal */
    edge_keycache_destroy(&c);
    LK_CHECK(c == NULL);
    edge_keycache_destroy(&c); /* NULL-safe */
}

static void tags_are_keyed_per_process(void)
{
    edge_keycache_t *a = edge_keycache_new(8, 1000), *b = edge_keycache_new(8, 1000);
    uint8_t ta[EDGE_KEYCACHE_TAG_LEN], tb[EDGE_KEYCACHE_TAG_LEN];
    edge_keycache_tag(a, "lk_live_same", 12, ta);
    edge_keycache_tag(b, "lk_live_same", 12, tb);
    LK_CHECK(memcmp(ta, tb, sizeof ta) != 0); /* a tag says nothing without the process secret */
    edge_keycache_destroy(&a);
    edge_keycache_destroy(&b);
}

static void disabled(void)
{
    edge_keycache_t *c = edge_keycache_new(8, 0);
    uint8_t t[EDGE_KEYCACHE_TAG_LEN], h[LK_PROTO_HASH_LEN] = {1}, out[LK_PROTO_HASH_LEN];
    edge_keycache_tag(c, "k", 1, t);
    edge_keycache_put(c, t, h, 0);
    LK_CHECK(edge_keycache_get(c, t, 1, out) == 0);
    edge_keycache_destroy(&c);
}

int main(void)
{
    LK_RUN(hit_miss_expire_drop);
    LK_RUN(tags_are_keyed_per_process);
    LK_RUN(disabled);
    return LK_TEST_DONE();
}
