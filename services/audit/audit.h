/*  audit - lumkey-audit's service object: the tamper-evident audit trail.
 *
 *  AUDIT appends an event to its tenant's hash chain (audit_append() in the
 *  database: locks the chain head row, so the chain is right under group
 *  commit and with several replicas), idempotent on the event id, and in the
 *  same transaction queues it in the Kafka outbox when Kafka is configured.
 *  Events that arrive together share one transaction (group commit); the
 *  answer means the row is committed; any database failure is ERROR
 *  UNAVAILABLE, so the edge fails closed (or, for a fail-open tenant, goes on
 *  and counts it).
 *
 *  The tick keeps monthly partitions created ahead, signs checkpoints of the
 *  chain heads (Ed25519, audit_sign) and runs retention. Admin ops
 *  (audit_admin.c) use a second connection so that a slow query never runs
 *  inside an event batch. Knows nothing of sockets (lk_worker calls
 *  audit_handle) nor of HTTP.
 */
#ifndef AUDIT_H
#define AUDIT_H

#include <stdint.h>

#include "audit_kafka.h"
#include "audit_sign.h"
#include "lk_buf.h"
#include "lk_db.h"
#include "lk_proto.h"

typedef struct {
    const char *conninfo; /* borrowed */
    int db_wait_ms;
    int statement_timeout_ms;
    int checkpoint_interval_ms;   /* sign the chain heads this often (60000) */
    int retention_interval_ms;    /* run retention this often (3600000) */
    const char *signing_key_file; /* borrowed */
    const char *kafka_brokers;    /* NULL / "": no Kafka export; borrowed */
    const char *kafka_topic;      /* borrowed */
} audit_config_t;

typedef struct {
    lk_db_t *db;  /* events (group-committed) */
    lk_db_t *adb; /* admin ops and maintenance */
    audit_sign_t *sign;
    audit_kafka_t *kafka; /* NULL without brokers */
    int outbox;
    audit_config_t cfg;
    int64_t next_checkpoint_ms, next_retention_ms, next_partitions_ms;
    uint64_t appended, checkpoints;
    /* the open group commit: events pipelined (lk_db_pipe_*), their outcomes
     * read at the commit and put into the held replies by audit_batch_reply */
    int pipe;
    size_t pipe_n;
    struct audit_piped {
        int64_t seq;
        int fail_open, ok;
    } * piped;
} audit_t;

/* NULL on failure (logged). Waits up to db_wait_ms for the database. */
audit_t *audit_new(const audit_config_t *cfg);
/* NULL-safe; nullifies *self_p. Flushes and stops the Kafka thread. */
void audit_destroy(audit_t **self_p);

/* lk_worker group-commit hooks. 0 / -1. */
int audit_batch_begin(void *ctx);
int audit_batch_commit(void *ctx);
int audit_batch_reply(void *ctx, lk_msg_t *rep);

/* lk_worker handler: AUDIT, ADMIN_REQ (audit.*). */
int audit_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);
/* lk_worker tick: partitions, checkpoints, retention. */
void audit_tick(void *ctx);

/* Signs a checkpoint of every chain head that moved since its last one. Returns how many, -1 on error. */
int audit_checkpoint_now(audit_t *self);

/* audit_admin.c: ADMIN_REQ ops. */
int audit_admin_handle(audit_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);
/* audit_admin.c: registers its statements on adb. 0 / -1. */
int audit_admin_prepare(lk_db_t *adb) __attribute__((warn_unused_result));

#endif
