/*  edge - the shared state of lumkey-edge's event loop.
 *
 *  One h2o context per listener (API and admin), one edge_rpc to the workers,
 *  one upstream table. Single-threaded: everything here is touched only from
 *  the loop thread.
 */
#ifndef EDGE_H
#define EDGE_H

#include <h2o.h>
#include <stdint.h>

#include "edge_keycache.h"
#include "edge_rpc.h"

typedef struct edge_upstreams edge_upstreams_t;

typedef struct {
    char listen[256];       /* host:port of the agent API */
    char admin_listen[256]; /* host:port of the admin API */
    char tls_cert[512], tls_key[512];
    char upstream_ca_file[512];
    char endpoints[EDGE_SVC_COUNT][512];
    uint64_t hop_timeout_ms;
    uint64_t upstream_timeout_ms;
    size_t max_body_bytes;
    size_t max_response_bytes;
    uint64_t keycache_ttl_ms;   /* 0 = off */
    uint64_t shutdown_grace_ms; /* after SIGTERM: not ready, but still accepting (endpoints catch up) */
    uint64_t shutdown_drain_ms; /* then: listeners closed, requests in flight may finish this long */
    uint64_t hold_timeout_ms;   /* a held request's wait for a human decision */
    int audit_off; /* LUMKEY_AUDIT_MODE=off (benchmark only, acknowledged): no request audit events */
} edge_config_t;

typedef struct {
    edge_config_t cfg;
    h2o_loop_t *loop;
    edge_rpc_t *rpc;
    edge_upstreams_t *upstreams;
    edge_keycache_t *keycache;
    volatile int draining; /* SIGTERM seen: /readyz answers 503, requests still served */
    volatile int stopping; /* listeners closed: new requests on open connections get a retryable 503 */
    struct {
        uint64_t requests, denied, upstream_errors, keycache_hits;
    } stats;
} edge_t;

extern edge_t *g_edge;

/* edge_config.c */
int edge_config_load(edge_config_t *cfg, int argc, char **argv) __attribute__((warn_unused_result));

/* edge_chat.c: the model APIs under /v1/ (exact paths from edge_api.c; others 404) */
int edge_chat_on_req(h2o_handler_t *handler, h2o_req_t *req);
/* edge_admin.c: /admin/v1/..., and health on both listeners */
int edge_admin_on_req(h2o_handler_t *handler, h2o_req_t *req);
/* Asks the vault who an admin token or session cookie is (ADMIN_AUTH); NULL if it could not be sent. */
edge_call_t *edge_admin_auth_call(const char *rid, h2o_iovec_t token, edge_rpc_cb cb, void *data);
int edge_health_on_req(h2o_handler_t *handler, h2o_req_t *req);
int edge_notfound_on_req(h2o_handler_t *handler, h2o_req_t *req);
/* edge_metrics.c: GET /metrics on the admin listener */
int edge_metrics_on_req(h2o_handler_t *handler, h2o_req_t *req);

#endif
