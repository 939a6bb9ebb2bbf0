/*  edge_upstream - HTTP/1.1 calls to model providers, pooled, verified TLS.
 *
 *  One connection pool and one TLS context per provider origin
 *  (scheme://host:port). h2o 2.2.5 does not check the upstream host name on
 *  TLS 1.3, so each origin's SSL_CTX pins the expected name with
 *  X509_VERIFY_PARAM_set1_host: a certificate for another name is refused.
 *  The request head (which carries the provider credential) lives in secret
 *  memory and is wiped as soon as the request is on the wire.
 *  Knows nothing of OpenAI or of policies.
 */
#ifndef EDGE_UPSTREAM_H
#define EDGE_UPSTREAM_H

#include <h2o.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "lk_buf.h"

typedef struct edge_upstreams edge_upstreams_t;
typedef struct edge_upstream_req edge_upstream_req_t;

typedef struct {
    /* The response head. Return 0 to read the body, -1 to abort (handle gone). */
    int (*on_head)(void *data, int status, h2o_iovec_t content_type);
    /* Body bytes, de-chunked, as they arrive. Return 0 to go on, -1 to abort (handle gone). */
    int (*on_body)(void *data, const char *bytes, size_t len);
    /* The end: err NULL for a clean end, else why (connect failure, reset, timeout).
     * Called exactly once unless a callback aborted or the call was cancelled; the handle is gone after. */
    void (*on_done)(void *data, const char *err, int before_head);
} edge_upstream_cbs_t;

edge_upstreams_t *edge_upstreams_new(h2o_context_t *ctx, uint64_t io_timeout_ms, const char *ca_file);
void edge_upstreams_destroy(edge_upstreams_t **self_p);

/* A parsed, allowlisted base URL ("https://api.openai.com/v1"). */
typedef struct {
    int tls;
    char host[256];
    uint16_t port;
    char path[512]; /* without a trailing slash */
} edge_origin_t;

/* Whether a connected provider address is one no provider may have, whatever
 * its name resolved to (DNS rebinding): link-local and cloud metadata
 * (169.254.0.0/16, fe80::/10, fd00:ec2::254), unspecified (0.0.0.0/8, ::),
 * and IPv4-mapped forms of those. Checked after connect, before the request
 * head (with the credential) is written. 1 / 0. */
int edge_addr_refused(const struct sockaddr *sa);

/* Parses base_url. -1 if it is not an absolute http(s) URL with a host. */
int edge_origin_parse(const char *base_url, edge_origin_t *out) __attribute__((warn_unused_result));

/* Starts a POST of body to origin + path. head_extra holds extra header lines
 * ("Name: value\r\n"...), typically the credential: it is copied into secret
 * memory (the caller wipes its own copy). body must stay valid until on_done
 * or cancel. Returns NULL on immediate failure (no callback then). */
edge_upstream_req_t *edge_upstream_post(edge_upstreams_t *self, const edge_origin_t *origin, const char *path,
                                        const char *head_extra, size_t head_extra_len, h2o_iovec_t body,
                                        const edge_upstream_cbs_t *cbs, void *data);
/* Stops a call; no callback runs afterwards. NULL-safe. */
void edge_upstream_cancel(edge_upstream_req_t *ureq);

/* Same with another method; content_type NULL: no body and no Content-Type / Content-Length
 * (GET). Used by edge_auth for OpenID Connect discovery, JWKS and the token exchange. */
edge_upstream_req_t *edge_upstream_request(edge_upstreams_t *self, const edge_origin_t *origin,
                                           const char *method, const char *content_type, const char *path,
                                           const char *head_extra, size_t head_extra_len, h2o_iovec_t body,
                                           const edge_upstream_cbs_t *cbs, void *data);

#endif
