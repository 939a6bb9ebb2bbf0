/*  edge_rpc - calls from the edge to the workers, inside the h2o event loop.
 *
 *  One DEALER socket per service, connected to every replica endpoint of it.
 *  Each call gets a call id, a reply callback and a timeout; a reply that
 *  arrives after its call timed out or was cancelled is dropped. The DEALER
 *  sockets use ZMQ_IMMEDIATE, so with no worker connected a call fails at
 *  once rather than queueing. Knows the envelope of lk_proto, nothing of HTTP.
 */
#ifndef EDGE_RPC_H
#define EDGE_RPC_H

#include <h2o.h>
#include <stdint.h>

#include "lk_proto.h"

typedef enum {
    EDGE_SVC_POLICY = 0,
    EDGE_SVC_VAULT,
    EDGE_SVC_APPROVAL,
    EDGE_SVC_AUDIT,
    EDGE_SVC_COUNT
} edge_svc_t;

typedef struct edge_rpc edge_rpc_t;
typedef struct edge_call edge_call_t;

/* reply is NULL when the call failed (timeout, undecodable reply); it and the
 * strings in it are valid only during the callback. */
typedef void (*edge_rpc_cb)(void *data, const lk_msg_t *reply);

/* endpoints: one (comma-separated list of) ZeroMQ endpoint(s) per service. */
edge_rpc_t *edge_rpc_new(h2o_loop_t *loop, const char *const endpoints[EDGE_SVC_COUNT], uint64_t timeout_ms);
void edge_rpc_destroy(edge_rpc_t **self_p);

/* Sends msg (its env.type, rid and deadline set by the caller; call_id is
 * assigned here). Returns the call handle, or NULL if it could not be sent
 * (no worker connected, encoding failed): then cb is never called. */
edge_call_t *edge_rpc_call(edge_rpc_t *self, edge_svc_t svc, lk_msg_t *msg, edge_rpc_cb cb, void *data);

/* Forgets a call: its callback will not run. NULL-safe. */
void edge_rpc_cancel(edge_rpc_t *self, edge_call_t *call);

/* Health: microseconds since the epoch of the last PONG from svc (0 = never). */
int64_t edge_rpc_last_pong_ms(edge_rpc_t *self, edge_svc_t svc);
const char *edge_svc_name(edge_svc_t svc);

/* Counters for metrics and benchmarks. */
typedef struct {
    uint64_t calls, replies, timeouts, send_failures, late_replies;
} edge_rpc_stats_t;
edge_rpc_stats_t edge_rpc_stats(edge_rpc_t *self);

#endif
