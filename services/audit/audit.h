/*  audit - lumkey-audit's service object: record one event durably.
 *
 *  AUDIT inserts a row into audit_events, idempotent on the event id (a
 *  retried event is stored once and answered with its original seq). Events
 *  that arrive together share one transaction (group commit); the answer
 *  means the row is committed; any database failure is ERROR
 *  UNAVAILABLE, so the edge fails closed. Later: hash chain, Kafka outbox.
 *  Knows nothing of sockets (lk_worker calls audit_handle).
 */
#ifndef AUDIT_H
#define AUDIT_H

#include "lk_buf.h"
#include "lk_db.h"
#include "lk_proto.h"

typedef struct {
    lk_db_t *db;
} audit_t;

/* NULL when out of memory. Waits up to db_wait_ms for the database. */
audit_t *audit_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms);
/* NULL-safe; nullifies *self_p. */
void audit_destroy(audit_t **self_p);

/* lk_worker group-commit hooks: the events that arrive together are written
 * in one transaction, and no reply leaves before it commits. 0 / -1. */
int audit_batch_begin(void *ctx);
int audit_batch_commit(void *ctx);

/* lk_worker handler: AUDIT. */
int audit_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);

#endif
