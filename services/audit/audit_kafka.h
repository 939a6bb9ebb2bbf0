/*  audit_kafka - drains the audit outbox into Kafka, on its own thread.
 *
 *  An idempotent librdkafka producer (enable.idempotence=true, acks=all,
 *  message.timeout.ms=0: retried until the broker takes it, in order). The
 *  thread reads audit_outbox in id order (rows not already in flight), renders
 *  each event as OCSF (or ECS, per tenant) in PostgreSQL, produces one message
 *  per event keyed by the tenant (the chain: per-tenant order is kept) with
 *  header lumkey-event-id = the event UUID (also in the body), and deletes an
 *  outbox row only when its delivery report says it was written. A crash
 *  before the delete re-sends it: at-least-once, consumers de-duplicate by
 *  event id. With several audit replicas, only the holder of a PostgreSQL
 *  advisory lock drains. Knows nothing of the edge protocol.
 */
#ifndef AUDIT_KAFKA_H
#define AUDIT_KAFKA_H

#include <stdint.h>

typedef struct audit_kafka audit_kafka_t;

typedef struct {
    uint64_t delivered;       /* delivery reports that said written */
    uint64_t delivery_errors; /* delivery reports that said failed (re-sent later) */
    uint64_t in_flight;       /* produced, no report yet */
    int draining;             /* this replica holds the outbox lock */
} audit_kafka_stats_t;

/* Starts the thread (strings are copied). NULL on failure (logged). */
audit_kafka_t *audit_kafka_start(const char *conninfo, const char *brokers, const char *topic);
/* Stops the thread (flushing up to 5 s). NULL-safe; nullifies *self_p. */
void audit_kafka_stop(audit_kafka_t **self_p);
audit_kafka_stats_t audit_kafka_stats(const audit_kafka_t *self);

#endif
