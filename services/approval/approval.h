/*  approval - holds: requests (or a model answer's tool call) that wait for
 *  a human decision.
 *
 *  A hold lives in PostgreSQL (table holds, migration 0015), never only in
 *  this process: HOLD opens a hold, or joins the open one for the same
 *  (tenant, key, digest, policy, version, kind), and answers PENDING at once
 *  with its expiry; the edge then polls HOLD_WAIT (about every 500 ms) until
 *  the outcome is APPROVED, REJECTED or TIMED_OUT. Any replica, or a
 *  restarted worker, answers the next poll from the table. A decision is a
 *  conditional UPDATE (status = 'pending' and not expired), so it takes
 *  effect once. approval_tick times out expired holds and marks holds whose
 *  waiter stopped polling `abandoned`. Knows nothing of HTTP, Slack or
 *  webhooks.
 */
#ifndef APPROVAL_H
#define APPROVAL_H

#include <stdint.h>

#include "lk_buf.h"
#include "lk_db.h"
#include "lk_proto.h"

#define APPROVAL_EXCERPT_MAX 400 /* bytes kept of a hold's excerpt, after redaction */

typedef struct {
    int64_t default_timeout_ms; /* HOLD with tmo 0 */
    int64_t max_timeout_ms;     /* a larger tmo is clamped */
    int64_t abandon_ms;         /* no HOLD / HOLD_WAIT for this long: abandoned */
} approval_opts_t;

typedef struct approval approval_t;

/* Connects (waiting up to db_wait_ms) and prepares the statements. NULL on
 * failure (logged). conninfo is borrowed for the call. */
approval_t *approval_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms,
                         const approval_opts_t *opts);
/* NULL-safe; nullifies *self_p. */
void approval_destroy(approval_t **self_p);

/* lk_worker handler: HOLD, HOLD_WAIT, ADMIN_REQ holds.* (ctx = approval_t). */
int approval_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);
/* lk_worker tick: times out expired holds, abandons unpolled ones. */
void approval_tick(void *ctx);

/* --- shared between the modules of the worker ------------------------------ */
struct approval_notify;
struct approval {
    lk_db_t *db;
    approval_opts_t opts;
    struct approval_notify *notify; /* the sender thread; signs / checks links */
};

typedef enum {
    APPROVAL_DECIDE_OK = 0,
    APPROVAL_DECIDE_NOT_FOUND = 1,
    APPROVAL_DECIDE_ALREADY = 2, /* decided, timed out or abandoned before: no change */
    APPROVAL_DECIDE_SELF = 3,    /* the approver is the requester */
} approval_decide_rc_t;

/* Decides hold `id` of tenant once. approve: 1 approve, 0 reject. approver is
 * the identity recorded ("adm_...", "slack:U..."); approver_names are other
 * names of the same person (admin token name, Slack username) compared with
 * the requester too (NULL-terminated, may be NULL). On LK_DB_OK *out says
 * what happened. */
lk_db_rc_t approval_decide(approval_t *self, lk_str_t tenant, lk_str_t id, int approve, lk_str_t approver,
                           const char *const *approver_names, lk_str_t reason, approval_decide_rc_t *out)
    __attribute__((warn_unused_result));

/* The admin operations holds.* (approval_admin.c). */
int approval_admin_handle(approval_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch);
int approval_admin_prepare(lk_db_t *db) __attribute__((warn_unused_result));

/* Writes a redacted copy of in (emails, long key-like tokens and anything
 * after "Bearer " become "[redacted]"; control characters become spaces;
 * cut at cap - 1 bytes on a UTF-8 boundary) into out, NUL-terminated.
 * Returns the length written. */
size_t approval_redact(char *out, size_t cap, lk_str_t in);

#endif
