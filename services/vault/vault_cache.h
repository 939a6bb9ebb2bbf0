/*  vault_cache - CRED_GET without PostgreSQL for a credential used lately.
 *
 *  Caches the credentials row CRED_GET reads (provider id, format, KEK id and
 *  version, wrapped DEK, nonce, ciphertext) by (credential id, tenant): what
 *  PostgreSQL already stores, encrypted. Never the plaintext, never the DEK:
 *  every CRED_GET still unwraps the DEK through the KMS and opens the secret,
 *  in guarded memory, wiped after use (docs/security.md). For at most max_age
 *  (LUMKEY_CACHE_MAX_AGE_MS, default 1 s; 0 turns the cache off).
 *
 *  Invalidation: migration 0021's NOTIFY lumkey_cache; a notification about
 *  credentials or providers (rotation, deletion, KEK rewrap) drops the whole
 *  cache before the next lookup. While the LISTEN connection is down the
 *  cache is not used, and it is emptied when the connection comes back.
 */
#ifndef VAULT_CACHE_H
#define VAULT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lk_db.h"
#include "lk_str.h"

#define VAULT_CACHE_SLOTS  1024
#define VAULT_CACHE_AGE_MS 1000

typedef struct vault_cache vault_cache_t;

/* max_age_ms <= 0: no cache. NULL when out of memory. */
vault_cache_t *vault_cache_new(const char *conninfo, int max_age_ms, size_t slots);
/* NULL-safe; nullifies *self_p. */
void vault_cache_destroy(vault_cache_t **self_p);
/* Applies the invalidations that arrived. 1 = the cache may answer, 0 = bypass it. */
int vault_cache_sync(vault_cache_t *self);
/* Drops every row (e.g. a cached row that no longer opens). */
void vault_cache_flush(vault_cache_t *self);
/* 1 with *row (valid until the next put, flush or sync), or 0. */
int vault_cache_get(vault_cache_t *self, lk_str_t cred_id, lk_str_t tenant, lk_db_row_t *row);
/* Stores row 0 of res when store is set (and the cache is on), and fills *row
 * (from the cache, or from res). 0 / -1 (too many columns). */
int vault_cache_put(vault_cache_t *self, int store, lk_str_t cred_id, lk_str_t tenant, const PGresult *res,
                    lk_db_row_t *row);
lk_db_cache_stats_t vault_cache_stats(const vault_cache_t *self);

#endif
