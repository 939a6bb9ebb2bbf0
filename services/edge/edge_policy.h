/*  edge_policy - the edge's side of answer-side policies: compiled policies
 *  by (tenant, id, version), fetched once from lumkey-policy (POLICY_GET)
 *  and kept while in use.
 *
 *  Versions are immutable, so an entry never goes stale: a policy change is a
 *  new version that the next DECIDE names, while requests in flight finish
 *  under the version they started with (they hold a reference). Entries no
 *  request holds are evicted least recently used beyond EDGE_POLICY_CACHE_N.
 *  Single-threaded: the edge loop only.
 */
#ifndef EDGE_POLICY_H
#define EDGE_POLICY_H

#include <stdint.h>

#include "edge_rpc.h"
#include "lk_policy.h"

#define EDGE_POLICY_CACHE_N 128

typedef struct edge_policy_ref edge_policy_ref_t;

/* The compiled policy held by ref (valid until edge_policy_release). */
const lk_policy_t *edge_policy_get(const edge_policy_ref_t *ref);

/* done(ud, ref): ref is NULL when the policy could not be loaded (worker
 * unreachable, unknown version, invalid document: logged). The caller owns
 * ref and releases it. */
typedef void (*edge_policy_cb)(void *ud, edge_policy_ref_t *ref);

typedef struct edge_policy_wait edge_policy_wait_t;

/* If the policy is cached: returns 1 with *ref set (no callback). Else
 * starts loading it and returns 0 with *wait set (if the request goes away,
 * edge_policy_abandon(*wait): done is then never called, the load still
 * completes into the cache), or -1 if the call could not be sent. rid: the
 * request's id, for the hop. */
int edge_policy_acquire(const char *rid, const char *tenant, const char *id, int64_t version,
                        edge_policy_cb done, void *ud, edge_policy_ref_t **ref, edge_policy_wait_t **wait);
/* NULL-safe. */
void edge_policy_abandon(edge_policy_wait_t *wait);

/* NULL-safe; nullifies *ref. */
void edge_policy_release(edge_policy_ref_t **ref);

/* Frees every entry (at exit). */
void edge_policy_shutdown(void);

#endif
