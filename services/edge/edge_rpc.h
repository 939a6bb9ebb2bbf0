/*  edge_rpc - calls from the edge to the workers, inside the h2o event loop.
 *
 *  One DEALER socket per service, connected to every replica endpoint of it:
 *  the endpoint setting is a comma-separated list of ZeroMQ endpoints and
 *  dns+tcp://NAME:PORT entries; every A/AAAA record of NAME is connected, and
 *  a resolver thread looks again every LUMKEY_DNS_REFRESH_MS (5000) so that
 *  replicas that appear are connected and vanished ones disconnected (the
 *  loop applies the answers within a second). The DEALER round-robins calls
 *  over the connected replicas.
 *
 *  Each call gets a call id, a reply callback and a timeout. A call that times
 *  out is sent once more (same rid and call id, fresh deadline), as one copy
 *  per connected replica: round-robin alone could hand it to the same hung
 *  replica again. The first answer wins; workers are idempotent on the
 *  request (lk_worker's cache, and each handler on its request id). Only the
 *  second timeout fails the call. A reply that
 *  arrives after its call failed or was cancelled is dropped. The encoded
 *  request is kept for that retry (in sodium memory when SECRET, wiped).
 *
 *  The DEALER sockets use ZMQ_IMMEDIATE, so with no worker connected a call
 *  fails at once rather than queueing. tcp:// links are CURVE clients
 *  (lk_curve.h). Knows the envelope of lk_proto, nothing of HTTP.
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

/* Replicas of svc the DEALER is connected to (listed + resolved). */
int edge_rpc_replicas(edge_rpc_t *self, edge_svc_t svc);

/* Counters for metrics and benchmarks. */
typedef struct {
    uint64_t calls, replies, timeouts, send_failures, late_replies, retries;
} edge_rpc_stats_t;
edge_rpc_stats_t edge_rpc_stats(edge_rpc_t *self);

#endif
