/*  policy_cache - the DECIDE lookup without PostgreSQL for a key seen lately:
 *  what is cached, its key and why it is safe. The mechanism is lk_db_live
 *  (common/lk_db.h), created by policy.c with these settings.
 *
 *  Caches the row SQL_DECIDE returns (key, tenant, state, scope checks, route
 *  and fallback, policy id and current version) by (key hash, model, source
 *  address), for at most max_age (LUMKEY_CACHE_MAX_AGE_MS, default 1 s; 0 turns
 *  the cache off) and never past the key's expiry. Unknown keys are not cached.
 *
 *  Invalidation: migration 0021 makes every change to api_keys, tenants,
 *  policies, policy_versions, routes, providers and credentials NOTIFY
 *  lumkey_cache; lk_db_live_sync, called before every lookup (and on the
 *  worker's tick), drains that LISTEN connection and drops the whole cache on
 *  any notification. While the LISTEN connection is down the cache is not used
 *  (sync answers 0), and it is emptied when the connection comes back.
 *
 *  How fast a change applies: at a worker's first DECIDE after PostgreSQL has
 *  delivered the notification to its LISTEN connection (sent at commit; the
 *  delivery is asynchronous, normally well under a millisecond), and in any
 *  case within max_age of the commit (1 s by default: the spec's revocation
 *  bound), even if a notification were lost without the connection failing
 *  visibly. A request racing the commit itself may be decided either way.
 *  Budgets and rate limits are not cached: they reserve in PostgreSQL.
 */
#ifndef POLICY_CACHE_H
#define POLICY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lk_db.h"
#include "lk_str.h"

#define POLICY_CACHE_KEY_MAX 400
#define POLICY_CACHE_SLOTS   8192
#define POLICY_CACHE_AGE_MS  1000

/* Builds the lookup key into out. Its length, or 0 (does not fit). ip: the
 * source address as sent to SQL, or NULL. */
size_t policy_cache_key(uint8_t out[POLICY_CACHE_KEY_MAX], const uint8_t *key_hash, size_t hash_len,
                        lk_str_t model, const char *ip);

#endif
