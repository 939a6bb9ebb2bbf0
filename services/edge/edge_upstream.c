/*  edge_upstream - HTTP/1.1 calls to model providers, pooled, verified TLS. */
#include "edge_upstream.h"

#include <h2o/http1client.h>
#include <h2o/socketpool.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_log.h"

#define MAX_ORIGINS 256

typedef struct {
    char key[300]; /* "https://host:port" */
    h2o_socketpool_t pool;
    h2o_http1client_ctx_t client_ctx;
    SSL_CTX *ssl_ctx;
} origin_entry_t;

struct edge_upstreams {
    h2o_context_t *ctx;
    h2o_timeout_t io_timeout;
    char ca_file[512];
    origin_entry_t *origins[MAX_ORIGINS];
    size_t n_origins;
};

struct edge_upstream_req {
    h2o_http1client_t *client;
    edge_upstream_cbs_t cbs;
    void *data;
    lk_buf_t head; /* secret: carries the credential */
    h2o_iovec_t bufs[2];
    int starting; /* inside edge_upstream_post: report failures by return value */
    const char *start_error;
};

edge_upstreams_t *edge_upstreams_new(h2o_context_t *ctx, uint64_t io_timeout_ms, const char *ca_file)
{
    edge_upstreams_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->ctx = ctx;
    h2o_timeout_init(ctx->loop, &self->io_timeout, io_timeout_ms);
    snprintf(self->ca_file, sizeof self->ca_file, "%s", ca_file ? ca_file : "");
    return self;
}

void edge_upstreams_destroy(edge_upstreams_t **self_p)
{
    edge_upstreams_t *self = *self_p;
    if (!self) return;
    for (size_t i = 0; i < self->n_origins; i++) {
        h2o_socketpool_dispose(&self->origins[i]->pool);
        if (self->origins[i]->ssl_ctx) SSL_CTX_free(self->origins[i]->ssl_ctx);
        free(self->origins[i]);
    }
    free(self);
    *self_p = NULL;
}

int edge_origin_parse(const char *base_url, edge_origin_t *out)
{
    memset(out, 0, sizeof *out);
    const char *p;
    if (strncmp(base_url, "https://", 8) == 0) {
        out->tls = 1;
        out->port = 443;
        p = base_url + 8;
    } else if (strncmp(base_url, "http://", 7) == 0) {
        out->port = 80;
        p = base_url + 7;
    } else {
        return -1;
    }
    size_t hlen = strcspn(p, ":/?#@");
    if (hlen == 0 || hlen >= sizeof out->host || p[hlen] == '@' || p[hlen] == '?' || p[hlen] == '#')
        return -1;
    if (p[0] == '[') { /* IPv6 literal */
        const char *rb = strchr(p, ']');
        if (!rb || (size_t)(rb - p) >= sizeof out->host) return -1;
        hlen = (size_t)(rb - p) + 1;
    }
    memcpy(out->host, p, hlen);
    p += hlen;
    if (*p == ':') {
        char *end;
        unsigned long port = strtoul(p + 1, &end, 10);
        if (end == p + 1 || port == 0 || port > 65535) return -1;
        out->port = (uint16_t)port;
        p = end;
    }
    if (*p && *p != '/') return -1;
    size_t plen = strcspn(p, "?#");
    if (p[plen]) return -1;
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    if (plen >= sizeof out->path) return -1;
    memcpy(out->path, p, plen);
    return 0;
}

static SSL_CTX *make_ssl_ctx(edge_upstreams_t *self, const char *host)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) lk_log_warn("could not load the system CA store");
    if (self->ca_file[0] && SSL_CTX_load_verify_locations(ctx, self->ca_file, NULL) != 1) {
        lk_log_error("could not load LUMKEY_UPSTREAM_CA_FILE %s", self->ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* the host-name check h2o 2.2.5 skips on TLS 1.3 */
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    char bare[256];
    snprintf(bare, sizeof bare, "%s", host);
    if (bare[0] == '[') { /* IPv6 literal: check as an IP address */
        bare[strlen(bare) - 1] = '\0';
        if (X509_VERIFY_PARAM_set1_ip_asc(param, bare + 1) != 1) goto fail;
    } else if (X509_VERIFY_PARAM_set1_host(param, bare, 0) != 1) {
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static origin_entry_t *get_origin(edge_upstreams_t *self, const edge_origin_t *o)
{
    char key[300];
    snprintf(key, sizeof key, "%s://%s:%u", o->tls ? "https" : "http", o->host, (unsigned)o->port);
    for (size_t i = 0; i < self->n_origins; i++)
        if (strcmp(self->origins[i]->key, key) == 0) return self->origins[i];
    if (self->n_origins == MAX_ORIGINS) {
        lk_log_error("too many provider origins");
        return NULL;
    }
    origin_entry_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    snprintf(e->key, sizeof e->key, "%s", key);
    if (o->tls && !(e->ssl_ctx = make_ssl_ctx(self, o->host))) {
        free(e);
        return NULL;
    }
    const char *host = o->host;
    size_t hlen = strlen(host);
    if (host[0] == '[') { /* the pool resolves the bare address */
        host++;
        hlen -= 2;
    }
    h2o_socketpool_init_by_hostport(&e->pool, h2o_strdup(NULL, host, hlen), o->port, o->tls, 1024);
    h2o_socketpool_set_timeout(&e->pool, self->ctx->loop, 30000);
    e->client_ctx.loop = self->ctx->loop;
    e->client_ctx.getaddr_receiver = &self->ctx->receivers.hostinfo_getaddr;
    e->client_ctx.io_timeout = &self->io_timeout;
    e->client_ctx.websocket_timeout = NULL;
    e->client_ctx.ssl_ctx = e->ssl_ctx;
    self->origins[self->n_origins++] = e;
    return e;
}

static int v4_refused(const uint8_t *a)
{
    return a[0] == 0 || (a[0] == 169 && a[1] == 254);
}

int edge_addr_refused(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_refused((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family != AF_INET6) return 1;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    static const uint8_t metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};
    if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) return v4_refused(a->s6_addr + 12);
    return IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_UNSPECIFIED(a) || memcmp(a->s6_addr, metadata, 16) == 0;
}

static void free_ureq(edge_upstream_req_t *u)
{
    lk_buf_free(&u->head); /* wipes */
    free(u);
}

static void wipe_head(edge_upstream_req_t *u)
{
    lk_buf_free(&u->head);
    u->bufs[0] = h2o_iovec_init(NULL, 0);
}

static int on_body(h2o_http1client_t *client, const char *errstr)
{
    edge_upstream_req_t *u = client->data;
    h2o_buffer_t *in = client->sock ? client->sock->input : NULL;
    if (in && in->size) {
        int rc = u->cbs.on_body(u->data, in->bytes, in->size);
        h2o_buffer_consume(&client->sock->input, in->size);
        if (rc != 0) {
            u->client = NULL;
            free_ureq(u);
            return -1;
        }
    }
    if (errstr) {
        u->client = NULL; /* freed by http1client after we return */
        u->cbs.on_done(u->data, errstr == h2o_http1client_error_is_eos ? NULL : errstr, 0);
        free_ureq(u);
    }
    return 0;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version,
                                       int status, h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers,
                                       int rlen)
{
    edge_upstream_req_t *u = client->data;
    wipe_head(u); /* the request is on the wire */
    if (errstr && errstr != h2o_http1client_error_is_eos) {
        u->client = NULL;
        u->cbs.on_done(u->data, errstr, 1);
        free_ureq(u);
        return NULL;
    }
    h2o_iovec_t ctype = h2o_iovec_init(NULL, 0);
    for (size_t i = 0; i < num_headers; i++)
        if (headers[i].name == &H2O_TOKEN_CONTENT_TYPE->buf) ctype = headers[i].value;
    if (u->cbs.on_head(u->data, status, ctype) != 0) {
        u->client = NULL;
        free_ureq(u);
        return NULL;
    }
    if (errstr == h2o_http1client_error_is_eos) {
        u->client = NULL;
        u->cbs.on_done(u->data, NULL, 0);
        free_ureq(u);
        return NULL;
    }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr,
                                          h2o_iovec_t **reqbufs, size_t *reqbufcnt, int *method_is_head)
{
    edge_upstream_req_t *u = client->data;
    if (errstr) {
        u->client = NULL;
        if (u->starting) { /* synchronous failure: edge_upstream_post reports it */
            u->start_error = errstr;
            return NULL;
        }
        u->cbs.on_done(u->data, errstr, 1);
        free_ureq(u);
        return NULL;
    }
    struct sockaddr_storage peer;
    if (client->sock && h2o_socket_getpeername(client->sock, (struct sockaddr *)&peer) != 0 &&
        edge_addr_refused((struct sockaddr *)&peer)) {
        static const char refused[] = "the provider's address is link-local, metadata or unspecified";
        lk_log_error("provider connection refused: %s (the request was not sent)", refused);
        u->client = NULL;
        if (u->starting) {
            u->start_error = refused;
            return NULL; /* h2o closes the connection; nothing was written */
        }
        u->cbs.on_done(u->data, refused, 1);
        free_ureq(u);
        return NULL;
    }
    *reqbufs = u->bufs;
    *reqbufcnt = u->bufs[1].len ? 2 : 1;
    *method_is_head = 0;
    return on_head;
}

edge_upstream_req_t *edge_upstream_post(edge_upstreams_t *self, const edge_origin_t *origin, const char *path,
                                        const char *head_extra, size_t head_extra_len, h2o_iovec_t body,
                                        const edge_upstream_cbs_t *cbs, void *data)
{
    return edge_upstream_request(self, origin, "POST", "application/json", path, head_extra, head_extra_len,
                                 body, cbs, data);
}

edge_upstream_req_t *edge_upstream_request(edge_upstreams_t *self, const edge_origin_t *origin,
                                           const char *method, const char *content_type, const char *path,
                                           const char *head_extra, size_t head_extra_len, h2o_iovec_t body,
                                           const edge_upstream_cbs_t *cbs, void *data)
{
    origin_entry_t *e = get_origin(self, origin);
    if (!e) return NULL;
    edge_upstream_req_t *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->cbs = *cbs;
    u->data = data;
    lk_buf_init(&u->head, 1);
    char line[1024];
    int default_port = origin->port == (origin->tls ? 443 : 80);
    char clen[96] = "";
    if (content_type)
        snprintf(clen, sizeof clen, "Content-Type: %s\r\nContent-Length: %zu\r\n", content_type, body.len);
    int n = snprintf(line, sizeof line,
                     "%s %s%s HTTP/1.1\r\nHost: %s%s%.0u\r\n%s"
                     "User-Agent: lumkey\r\nConnection: keep-alive\r\n",
                     method, origin->path[0] || path[0] ? origin->path : "/", path, origin->host,
                     default_port ? "" : ":", default_port ? 0u : (unsigned)origin->port, clen);
    if (n < 0 || (size_t)n >= sizeof line || lk_buf_append(&u->head, line, (size_t)n) != 0 ||
        lk_buf_append(&u->head, head_extra, head_extra_len) != 0 || lk_buf_append(&u->head, "\r\n", 2) != 0) {
        free_ureq(u);
        return NULL;
    }
    u->bufs[0] = h2o_iovec_init(u->head.data, u->head.len);
    u->bufs[1] = body;
    u->starting = 1;
    h2o_http1client_connect_with_pool(&u->client, u, &e->client_ctx, &e->pool, on_connect);
    u->starting = 0;
    if (u->start_error) {
        lk_log_warn("provider connection failed at once: %s", u->start_error);
        free_ureq(u);
        return NULL;
    }
    return u;
}

void edge_upstream_cancel(edge_upstream_req_t *u)
{
    if (!u) return;
    if (u->client) h2o_http1client_cancel(u->client);
    free_ureq(u);
}
