/*  edge_keycache - remembers the vault's keyed hash of recently seen keys. */
#include "edge_keycache.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t tag[EDGE_KEYCACHE_TAG_LEN];
    uint8_t hash[LK_PROTO_HASH_LEN];
    int64_t expires_ms; /* 0 = empty */
} entry_t;

struct edge_keycache {
    uint8_t secret[crypto_generichash_KEYBYTES];
    entry_t *slots;
    size_t mask;
    int64_t ttl_ms;
};

edge_keycache_t *edge_keycache_new(size_t slots, int64_t ttl_ms)
{
    size_t n = 1;
    while (n < slots)
        n <<= 1;
    edge_keycache_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->slots = calloc(n, sizeof(entry_t));
    if (!self->slots) {
        free(self);
        return NULL;
    }
    self->mask = n - 1;
    self->ttl_ms = ttl_ms;
    randombytes_buf(self->secret, sizeof self->secret);
    return self;
}

void edge_keycache_destroy(edge_keycache_t **self_p)
{
    edge_keycache_t *self = *self_p;
    if (!self) return;
    sodium_memzero(self->secret, sizeof self->secret);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

void edge_keycache_tag(edge_keycache_t *self, const char *key, size_t len, uint8_t *tag)
{
    crypto_generichash(tag, EDGE_KEYCACHE_TAG_LEN, (const uint8_t *)key, len, self->secret,
                       sizeof self->secret);
}

static entry_t *slot_of(edge_keycache_t *self, const uint8_t *tag)
{
    uint64_t h;
    memcpy(&h, tag, sizeof h);
    return &self->slots[h & self->mask];
}

int edge_keycache_get(edge_keycache_t *self, const uint8_t *tag, int64_t now_ms, uint8_t *hash)
{
    if (self->ttl_ms <= 0) return 0;
    entry_t *e = slot_of(self, tag);
    if (e->expires_ms <= now_ms || sodium_memcmp(e->tag, tag, EDGE_KEYCACHE_TAG_LEN) != 0) return 0;
    memcpy(hash, e->hash, LK_PROTO_HASH_LEN);
    return 1;
}

void edge_keycache_put(edge_keycache_t *self, const uint8_t *tag, const uint8_t *hash, int64_t now_ms)
{
    if (self->ttl_ms <= 0) return;
    entry_t *e = slot_of(self, tag);
    memcpy(e->tag, tag, EDGE_KEYCACHE_TAG_LEN);
    memcpy(e->hash, hash, LK_PROTO_HASH_LEN);
    e->expires_ms = now_ms + self->ttl_ms;
}

void edge_keycache_drop(edge_keycache_t *self, const uint8_t *tag)
{
    entry_t *e = slot_of(self, tag);
    if (sodium_memcmp(e->tag, tag, EDGE_KEYCACHE_TAG_LEN) == 0) e->expires_ms = 0;
}
