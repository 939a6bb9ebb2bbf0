/*  vault_cache - CRED_GET without PostgreSQL for a credential used lately:
 *  what is cached, its key and why it is safe. The mechanism is lk_db_live
 *  (common/lk_db.h), created by vault.c with these settings.
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

#define VAULT_CACHE_KEY_MAX 512

/* The notifications that drop the cache (lk_db_live_new's flush_on). */
extern const char *const vault_cache_tables[];

/* (credential id, tenant) as a lookup key into out: its length, or 0 (does not fit). */
size_t vault_cache_key(uint8_t out[VAULT_CACHE_KEY_MAX], lk_str_t cred_id, lk_str_t tenant);

#endif
