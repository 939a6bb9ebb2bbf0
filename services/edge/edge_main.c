/*  lumkey-edge - the HTTP edge: agents and admins in, providers out.
 *
 *  main reads like a table of contents: load settings, open the worker links
 *  and the provider pools, start the two listeners, run the loop until
 *  SIGTERM/SIGINT, drain, tear down.
 *
 *  Shutdown, as Kubernetes expects it: on SIGTERM /readyz answers 503 at once
 *  (/livez stays 200) while requests are still served for
 *  LUMKEY_SHUTDOWN_GRACE_MS, the time the endpoints take to drop this pod;
 *  then the listeners close (a request on a kept-alive connection gets a
 *  retryable 503; a connection still in the kernel's accept queue is reset:
 *  it was never accepted, the client retries), requests in flight, streams included, may finish for up to
 *  LUMKEY_SHUTDOWN_DRAIN_MS, and the process exits 0. Held requests
 *  (approval) are answered with a retryable 503 at their next poll once the
 *  listeners close (edge_chat.c); the audit worker's Kafka outbox keeps what
 *  its producer has not delivered.
 */
#include <errno.h>
#include <h2o.h>
#include <h2o/http2.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edge.h"
#include "edge_audit.h"
#include "edge_auth.h"
#include "edge_console.h"
#include "edge_http.h"
#include "edge_metrics.h"
#include "edge_slack.h"
#include "edge_upstream.h"
#include "lk_log.h"
#include "lk_util.h"

edge_t *g_edge;

typedef struct {
    h2o_globalconf_t conf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept;
    h2o_socket_t *listener;
} listener_t;

static volatile sig_atomic_t s_signal;

static void on_signal(int sig)
{
    s_signal = sig;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err) return;
    listener_t *l = listener->data;
    h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
    if (sock) h2o_accept(&l->accept, sock);
}

static void route(h2o_hostconf_t *host, const char *path, int (*on_req)(h2o_handler_t *, h2o_req_t *))
{
    h2o_pathconf_t *pc = h2o_config_register_path(host, path, 0);
    h2o_handler_t *h = h2o_create_handler(pc, sizeof *h);
    h->on_req = on_req;
}

static int open_listener(listener_t *l, const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host) {
        lk_log_error("listen address %s is not host:port", hostport);
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0 || !res) {
        lk_log_error("cannot resolve listen address %s", hostport);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        lk_log_error("cannot listen on %s: %s", hostport, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    l->listener = h2o_evloop_socket_create(l->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    l->listener->data = l;
    h2o_socket_read_start(l->listener, on_accept);
    return 0;
}

static int setup_tls(listener_t *l, const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return -1;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        lk_log_error("cannot load the TLS certificate or key");
        SSL_CTX_free(ctx);
        return -1;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    l->accept.ssl_ctx = ctx;
    return 0;
}

typedef struct {
    const char *path;
    int (*on_req)(h2o_handler_t *, h2o_req_t *);
} route_t;

/* on every listener; "/" last of all answers 404 in the API's shape */
#define HEALTH_ROUTES                                                                                        \
    {"/livez", edge_health_on_req}, {"/readyz", edge_health_on_req}, {"/healthz", edge_health_on_req},       \
    {                                                                                                        \
        "/", edge_notfound_on_req                                                                            \
    }

/* One h2o configuration and context per listener, with its routes (NULL-terminated). */
static void init_listener(listener_t *l, h2o_loop_t *loop, size_t max_entity, const route_t *routes)
{
    h2o_config_init(&l->conf);
    l->conf.max_request_entity_size = max_entity;
    l->conf.server_name = h2o_iovec_init(H2O_STRLIT("lumkey"));
    h2o_hostconf_t *host = h2o_config_register_host(&l->conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    for (const route_t *r = routes; r->path; r++)
        route(host, r->path, r->on_req);
    h2o_context_init(&l->ctx, loop, &l->conf);
    l->accept.ctx = &l->ctx;
    l->accept.hosts = l->conf.hosts;
}

int main(int argc, char **argv)
{
    static edge_t edge;
    static listener_t api, admin;
    g_edge = &edge;
    lk_log_init("edge");
    if (sodium_init() < 0 || edge_config_load(&edge.cfg, argc, argv) != 0 || edge_slack_init() != 0) return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    /* h2o buffers bodies up to this; our own limit answers in OpenAI's shape below it */
    size_t entity_limit = edge.cfg.max_body_bytes * 2 + 65536;
    edge.loop = h2o_evloop_create();
    static const route_t API_ROUTES[] = {{"/v1/", edge_chat_on_req},
                                         {"/slack/interactivity", edge_slack_on_req},
                                         {"/approvals/v1/links/", edge_links_on_req},
                                         HEALTH_ROUTES,
                                         {NULL, NULL}};
    static const route_t ADMIN_ROUTES[] = {{"/admin/", edge_admin_on_req},
                                           {"/scim/", edge_admin_on_req},
                                           {"/auth/", edge_auth_on_req},
                                           {"/metrics", edge_metrics_on_req},
                                           {"/console", edge_console_on_req},
                                           HEALTH_ROUTES,
                                           {NULL, NULL}};
    init_listener(&api, edge.loop, entity_limit, API_ROUTES);
    init_listener(&admin, edge.loop, entity_limit, ADMIN_ROUTES);

    const char *eps[EDGE_SVC_COUNT];
    for (int i = 0; i < EDGE_SVC_COUNT; i++)
        eps[i] = edge.cfg.endpoints[i];
    edge.rpc = edge_rpc_new(edge.loop, eps, edge.cfg.hop_timeout_ms);
    edge.upstreams = edge_upstreams_new(&api.ctx, edge.cfg.upstream_timeout_ms, edge.cfg.upstream_ca_file);
    edge.keycache = edge_keycache_new(8192, (int64_t)edge.cfg.keycache_ttl_ms);
    if (!edge.rpc || !edge.upstreams || !edge.keycache) return 1;
    edge_auth_init(); /* SSO settings (LUMKEY_OIDC_*) */
    if (edge.cfg.tls_cert[0] && setup_tls(&api, edge.cfg.tls_cert, edge.cfg.tls_key) != 0) return 1;
    if (open_listener(&api, edge.cfg.listen) != 0 || open_listener(&admin, edge.cfg.admin_listen) != 0)
        return 1;
    lk_log_to_stdout();
    lk_log_info("ready: agent API on %s%s, admin API on %s", edge.cfg.listen,
                edge.cfg.tls_cert[0] ? " (TLS)" : "", edge.cfg.admin_listen);

    int64_t close_at = INT64_MAX, drain_until = 0;
    for (;;) {
        h2o_evloop_run(edge.loop, 50);
        int64_t now = lk_now_ms();
        if (s_signal && !edge.draining) {
            edge.draining = 1;
            close_at = now + (int64_t)edge.cfg.shutdown_grace_ms;
            lk_log_info("signal %d: not ready any more; accepting for %llu ms more", (int)s_signal,
                        (unsigned long long)edge.cfg.shutdown_grace_ms);
        }
        if (edge.draining && !edge.stopping && now >= close_at) {
            edge.stopping = 1;
            h2o_socket_close(api.listener);
            h2o_socket_close(admin.listener);
            drain_until = now + (int64_t)edge.cfg.shutdown_drain_ms;
            lk_log_info("listeners closed; %llu requests in flight",
                        (unsigned long long)edge_metrics_inflight());
        }
        /* at least 500 ms after closing: connections accepted just before get their request read
         * and answered (a retryable 503) instead of being reset */
        if (edge.stopping) edge_audit_flush(); /* no deferred closing event waits any more */
        /* closing audit events get up to 2 s more to be acknowledged (audit may be down) */
        if (edge.stopping && ((edge_metrics_inflight() == 0 && now >= close_at + 500 &&
                               (edge_audit_pending() == 0 || now >= close_at + 2000)) ||
                              now >= drain_until))
            break;
    }
    if (edge_audit_pending())
        lk_log_warn("%zu closing audit events not acknowledged after LUMKEY_SHUTDOWN_DRAIN_MS",
                    edge_audit_pending());
    if (edge_metrics_inflight())
        lk_log_warn("%llu requests still in flight after LUMKEY_SHUTDOWN_DRAIN_MS",
                    (unsigned long long)edge_metrics_inflight());
    edge_rpc_stats_t st = edge_rpc_stats(edge.rpc);
    lk_log_info("stopped: %llu requests, %llu worker calls, %llu timeouts",
                (unsigned long long)edge.stats.requests, (unsigned long long)st.calls,
                (unsigned long long)st.timeouts);
    edge_auth_shutdown();
    return 0;
}
