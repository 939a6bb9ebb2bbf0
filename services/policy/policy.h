/*  policy - lumkey-policy's service object: authenticate a key by its keyed
 *  hash, check it may use the model, and route the request.
 *
 *  One prepared statement per DECIDE (key, its scope and the route in one
 *  round trip). No policy engine yet: every authenticated, routable request
 *  is ALLOWed with an empty policy id. Knows nothing of sockets (lk_worker
 *  calls policy_handle) or of HTTP.
 */
#ifndef POLICY_H
#define POLICY_H

#include "lk_buf.h"
#include "lk_db.h"
#include "lk_proto.h"

typedef struct {
    lk_db_t *db;
    char msg[512]; /* the refusal message of the current request */
} policy_t;

/* Prepares the statements and connects (waiting up to db_wait_ms; a database
 * that is still away is retried per request). NULL when out of memory. */
policy_t *policy_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms);
/* NULL-safe; nullifies *self_p. */
void policy_destroy(policy_t **self_p);

/* lk_worker handler: DECIDE. */
int policy_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);

#endif
