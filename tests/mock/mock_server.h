/*  mock_server - what lumkey-mock's request handler shares with its loops.
 *
 *  The command-line configuration (read-only once the loops run), the
 *  per-thread loop context, and the timeout table: h2o 2.2.5 needs one
 *  h2o_timeout_t per distinct duration, so each thread keeps a small table
 *  of them. mock_handler.c answers requests; lumkey-mock.c owns sockets,
 *  threads and main.
 */
#ifndef MOCK_SERVER_H
#define MOCK_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#define MOCK_MAX_TIMERS   64 /* distinct timeout values per thread */
#define MOCK_HANG_POLL_MS 500

typedef struct {
    char host[256];
    char port[16];
    int threads;
    const char *tls_cert, *tls_key;
    char *expect_auth; /* "Bearer KEY", or NULL: no key required */
    size_t expect_auth_len;
    int chunks, interval_ms, latency_ms; /* defaults for every request */
    size_t record;                       /* requests kept for /_mock/requests */
    uint16_t boot;                       /* varies ids across runs */
} mock_config_t;

extern mock_config_t mock_cfg;

typedef struct {
    h2o_context_t ctx; /* first: req->conn->ctx points here */
    h2o_accept_ctx_t accept_plain;
    h2o_accept_ctx_t accept_tls;
    int fd; /* this thread's SO_REUSEPORT listener */
    int index;
    pthread_t tid;
    uint64_t served;
    struct {
        uint32_t ms;
        h2o_timeout_t timeout;
    } timers[MOCK_MAX_TIMERS];
    size_t ntimers;
    h2o_timeout_t sniff_timeout;
} mock_thread_t;

/* The h2o_timeout_t for ms on this thread; NULL when the table is full. */
h2o_timeout_t *mock_timer_for(mock_thread_t *thr, uint32_t ms);

/* Routes jansson's allocations into request pools. Call once before the loops start. */
void mock_handler_init(void);
/* The h2o handler for every path. */
int mock_handler_on_req(h2o_handler_t *self, h2o_req_t *req);

#endif
