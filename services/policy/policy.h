/*  policy - lumkey-policy's service object: authenticate a key by its keyed
 *  hash, check it may use the model, route the request, and decide on it
 *  with the key's policy (or its tenant's default policy).
 *
 *  One prepared statement per DECIDE finds the key, its scope, the route and
 *  the policy's current version in one round trip, and its row is cached
 *  (policy_cache.h: dropped on every change NOTIFYed by PostgreSQL), so a key
 *  seen lately needs no SQL unless its policy has budgets; the compiled policy comes
 *  from a small cache keyed by (policy id, version) - versions are immutable,
 *  so a change is simply a new version that the next decision picks up, on
 *  every worker, without any invalidation. Budgets and rate limits reserve
 *  in PostgreSQL (policy_budget.c). Knows nothing of sockets (lk_worker calls
 *  policy_handle) or of HTTP.
 */
#ifndef POLICY_H
#define POLICY_H

#include "lk_buf.h"
#include "lk_db.h"
#include "lk_policy.h"
#include "lk_proto.h"
#include "policy_anomaly.h"
#include "policy_cache.h"

#define POLICY_CACHE_N 64
#define POLICY_ID_MAX  72

typedef struct {
    char id[POLICY_ID_MAX];
    int64_t version;
    lk_policy_t *pol;
    uint64_t used; /* tick of the last use, for eviction */
} policy_cache_entry_t;

typedef struct policy_hdp policy_hdp_t; /* policy_hdp.c */

typedef struct {
    lk_db_t *db;
    char msg[512]; /* the refusal message of the current request */
    policy_cache_entry_t cache[POLICY_CACHE_N];
    uint64_t tick;
    lk_policy_result_t result;        /* of the current DECIDE (its body is kept in scratch) */
    policy_hdp_t *hdp;                /* HDP verification state (token-by-reference store) */
    const lk_policy_hdp_t *hdp_facts; /* of the current DECIDE; NULL: no HDP header */
    pa_engine_t *anom;                /* issue 10: anomaly baselines (policy_anomaly.c) */
    pa_call_t acall;                  /* the current DECIDE's score */
    lk_db_t *anom_db;                 /* the baselines' own connection ("lumkey-policy-anomaly") */
    lk_db_live_t *decide_cache;       /* DECIDE rows by (key hash, model, address): policy_cache.h */
} policy_t;

/* Prepares the statements and connects (waiting up to db_wait_ms; a database
 * that is still away is retried per request). NULL when out of memory. */
policy_t *policy_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms);
/* NULL-safe; nullifies *self_p. */
void policy_destroy(policy_t **self_p);

/* lk_worker tick (1 s): applies the cache invalidations that arrived
 * meanwhile; flushes and refreshes the anomaly baselines. */
void policy_tick(void *ctx);

/* lk_worker handler: DECIDE, POLICY_GET, SETTLE, ADMIN_REQ (policies.*). */
int policy_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);

/* The compiled policy (id, version) of tenant, from the cache or the
 * database. NULL with *st set: NOT_FOUND, UNAVAILABLE (database), INTERNAL
 * (a stored document that no longer compiles: logged). */
const lk_policy_t *policy_compiled(policy_t *self, lk_str_t tenant, lk_str_t id, int64_t version,
                                   lk_status_t *st);

/* policy_budget.c ----------------------------------------------------------- */

typedef struct {
    const char *scope; /* "key:<id>" or "team:<tenant>/<team>" */
    int64_t tokens;    /* prompt estimate + max output tokens */
    int64_t microusd;  /* estimated maximum cost, -1 unknown */
    const char *model; /* for the reservation record */
    double price_in;   /* USD per million tokens, < 0 unknown */
    double price_out;
} policy_budget_req_t;

typedef enum {
    BUDGET_OK = 0,
    BUDGET_NONE = 1,      /* no limits: nothing reserved */
    BUDGET_REFUSED = 2,   /* a limit would be exceeded: *code and *msg say which */
    BUDGET_DB_ERROR = -1, /* *rc says why */
} policy_budget_rc_t;

int policy_budget_prepare(lk_db_t *db) __attribute__((warn_unused_result));
/* Reserves for request rid against limits, all or nothing. */
policy_budget_rc_t policy_budget_reserve(lk_db_t *db, lk_str_t rid, const lk_policy_limits_t *lim,
                                         const policy_budget_req_t *b, const char **code, char *msg,
                                         size_t msg_cap, lk_db_rc_t *rc);
/* Settles rid's reservation to the real usage (-1 = unknown: stays). 0 with
 * *microusd (-1 unknown / nothing reserved), or the database error. */
lk_db_rc_t policy_budget_settle(lk_db_t *db, lk_str_t rid, int64_t prompt_tokens, int64_t completion_tokens,
                                int64_t *microusd);

/* policy_admin.c ------------------------------------------------------------ */

int policy_admin_prepare(lk_db_t *db) __attribute__((warn_unused_result));
int policy_admin_handle(policy_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);

/* The same answers the policies.* ops give, for policy_hdp.c. */
int policy_admin_reply_json(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, json_t *body);
/* {"error": {message, type, code, param}}; param may be NULL (null). */
int policy_admin_reply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code,
                           const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
int policy_admin_reply_db(lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t rc, const char *conflict);
json_t *policy_admin_load_body(lk_str_t text, lk_msg_t *rep, lk_buf_t *scratch, int *answered);
int policy_admin_check_fields(json_t *body, const char *const *allowed, lk_msg_t *rep, lk_buf_t *scratch,
                              int *answered);

/* policy_hdp.c (docs/hdp.md) ----------------------------------------------- */

int policy_hdp_prepare(lk_db_t *db) __attribute__((warn_unused_result));
policy_hdp_t *policy_hdp_new(void);
void policy_hdp_destroy(policy_hdp_t **h_p);
/* Verifies the DECIDE's HDP-Token / HDP-Token-Ref header, if any, for tenant:
 * the facts for the `hdp` policy condition (NULL: no header) and *json, the
 * result object as text (valid until the next call). Never refuses. */
const lk_policy_hdp_t *policy_hdp_check(policy_t *self, const lk_decide_t *q, lk_str_t tenant,
                                        lk_str_t *json);
/* hdp.issuers.create / list / revoke. */
int policy_hdp_admin(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch);

#endif
