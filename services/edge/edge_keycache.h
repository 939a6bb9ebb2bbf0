/*  edge_keycache - remembers the vault's keyed hash of recently seen keys.
 *
 *  Saves the vault round trip for a key seen in the last minute. Holds no key:
 *  an entry is found by a tag, BLAKE2b of the presented key under a random
 *  per-process key, and holds the vault's keyed hash (which policy checks on
 *  every request, revocation included). An entry whose key policy refuses is
 *  dropped. Fixed size, direct-mapped: a collision simply evicts.
 */
#ifndef EDGE_KEYCACHE_H
#define EDGE_KEYCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lk_proto.h"

#define EDGE_KEYCACHE_TAG_LEN 32

typedef struct edge_keycache edge_keycache_t;

/* ttl_ms 0 disables the cache (every lookup misses). */
edge_keycache_t *edge_keycache_new(size_t slots, int64_t ttl_ms);
void edge_keycache_destroy(edge_keycache_t **self_p);

/* The tag of a presented key (out: EDGE_KEYCACHE_TAG_LEN bytes). */
void edge_keycache_tag(edge_keycache_t *self, const char *key, size_t len, uint8_t *tag);
/* 1 and the hash if tag is cached and fresh, else 0. */
int edge_keycache_get(edge_keycache_t *self, const uint8_t *tag, int64_t now_ms, uint8_t *hash);
void edge_keycache_put(edge_keycache_t *self, const uint8_t *tag, const uint8_t *hash, int64_t now_ms);
void edge_keycache_drop(edge_keycache_t *self, const uint8_t *tag);

#endif
