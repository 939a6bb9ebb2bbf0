/*  edge_http - answers in the API's own shape, and request helpers. */
#include "edge_http.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "lk_util.h"

#include <h2o/version.h>
#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2
#error "edge_http_framing_error reads h2o 2.2's HTTP/1 connection layout; check it against this h2o version"
#endif

/* The public prefix of h2o 2.2's private struct st_h2o_http1_conn_t (lib/http1.c). */
struct http1_conn_prefix {
    h2o_conn_t super;
    h2o_socket_t *sock;
};

static int should_retry(int status)
{
    return status == 408 || status == 409 || status == 429 || status >= 500;
}

void edge_http_add_common_headers(h2o_req_t *req, int status, const char *rid)
{
    if (rid)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, rid,
                              strlen(rid));
    if (status >= 400 && !should_retry(status))
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-should-retry"), 0, NULL,
                              H2O_STRLIT("false"));
}

const char *edge_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    }
    return "";
}

static void send_body(h2o_req_t *req, int status, const char *rid, h2o_iovec_t body)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.status = status;
    req->res.reason = edge_http_reason(status);
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    edge_http_add_common_headers(req, status, rid);
    h2o_start_response(req, &generator);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

void edge_http_send_json(h2o_req_t *req, int status, const char *rid, const char *body, size_t len)
{
    send_body(req, status, rid, h2o_strdup(&req->pool, body, len));
}

typedef struct {
    char *p;
    size_t n;
} wipe_t;

static void on_wipe(void *p)
{
    wipe_t *w = p;
    sodium_memzero(w->p, w->n);
}

void edge_http_send_json_secret(h2o_req_t *req, int status, const char *rid, const char *body, size_t len)
{
    wipe_t *w = h2o_mem_alloc_shared(&req->pool, sizeof *w + len, on_wipe);
    w->p = (char *)(w + 1);
    w->n = len;
    memcpy(w->p, body, len);
    send_body(req, status, rid, h2o_iovec_init(w->p, len));
}

const char *edge_http_error_type(int status)
{
    switch (status) {
    case 400:
    case 401:
    case 404:
    case 405:
    case 413:
        return "invalid_request_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

void edge_http_send_error(h2o_req_t *req, int status, const char *rid, const char *type, const char *code,
                          const char *message)
{
    json_t *err = json_pack("{s:{s:s,s:s,s:n,s:o}}", "error", "message", message, "type",
                            type ? type : edge_http_error_type(status), "param", "code",
                            code ? json_string(code) : json_null());
    char *s = err ? json_dumps(err, JSON_COMPACT) : NULL;
    if (s) {
        edge_http_send_json(req, status, rid, s, strlen(s));
    } else {
        static const char fallback[] = "{\"error\":{\"message\":\"internal error\",\"type\":\"api_error\","
                                       "\"param\":null,\"code\":null}}";
        edge_http_send_json(req, 500, rid, fallback, sizeof fallback - 1);
    }
    free(s);
    json_decref(err);
}

int edge_http_status_of(lk_status_t st)
{
    switch (st) {
    case LK_ST_OK:
        return 200;
    case LK_ST_BAD_REQUEST:
        return 400;
    case LK_ST_UNAUTHORIZED:
        return 401;
    case LK_ST_FORBIDDEN:
        return 403;
    case LK_ST_NOT_FOUND:
        return 404;
    case LK_ST_CONFLICT:
        return 409;
    case LK_ST_UNAVAILABLE:
        return 503;
    case LK_ST_RATE_LIMITED:
        return 429;
    case LK_ST_INTEGRITY:
    case LK_ST_INTERNAL:
        return 500;
    }
    return 500;
}

h2o_iovec_t edge_http_header(h2o_req_t *req, const char *name, int *dup)
{
    size_t n = strlen(name);
    const h2o_token_t *tok = h2o_lookup_token(name, n);
    ssize_t i =
        tok ? h2o_find_header(&req->headers, tok, -1) : h2o_find_header_by_str(&req->headers, name, n, -1);
    if (dup) *dup = 0;
    if (i < 0) return h2o_iovec_init(NULL, 0);
    ssize_t j =
        tok ? h2o_find_header(&req->headers, tok, i) : h2o_find_header_by_str(&req->headers, name, n, i);
    if (j >= 0) {
        if (dup) *dup = 1;
        return h2o_iovec_init(NULL, 0);
    }
    return req->headers.entries[i].value;
}

h2o_iovec_t edge_http_bearer(h2o_req_t *req)
{
    int dup = 0;
    h2o_iovec_t v = edge_http_header(req, "authorization", &dup);
    if (dup) return h2o_iovec_init(NULL, 0);
    if (v.base) {
        if (v.len > 7 && strncasecmp(v.base, "Bearer ", 7) == 0) return h2o_iovec_init(v.base + 7, v.len - 7);
        return h2o_iovec_init(v.base, 0); /* present but not Bearer: empty key */
    }
    v = edge_http_header(req, "x-api-key", &dup);
    if (dup) return h2o_iovec_init(NULL, 0);
    return v;
}

void edge_http_peer(h2o_req_t *req, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (void *)&ss);
    buf[0] = '\0';
    if (sl == 0) return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)cap);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)cap);
}

static int name_is(const char *p, size_t n, const char *lc)
{
    return n == strlen(lc) && strncasecmp(p, lc, n) == 0;
}

const char *edge_http_framing_error(h2o_req_t *req)
{
    if (req->version >= 0x200) return NULL; /* HTTP/2 frames bodies itself */
    h2o_socket_t *sock = ((struct http1_conn_prefix *)req->conn)->sock;
    if (!sock || !sock->input) return NULL;
    /* the request head is still at the start of the input buffer while the handler runs */
    const char *p = sock->input->bytes, *end = p + sock->input->size;
    const char *eol = memchr(p, '\n', (size_t)(end - p)); /* skip the request line */
    if (!eol) return NULL;
    int n_cl = 0, n_te = 0;
    const char *why = NULL;
    for (p = eol + 1; p < end && !why;) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) break;
        size_t len = (size_t)(eol - p);
        if (len && p[len - 1] == '\r') len--;
        if (len == 0) break; /* end of the head */
        if (p[0] == ' ' || p[0] == '\t') {
            why = "folded header lines are not accepted";
            break;
        }
        const char *colon = memchr(p, ':', len);
        if (!colon) break; /* h2o would not have accepted this; not a head line */
        size_t nlen = (size_t)(colon - p);
        for (const char *v = colon + 1; v < p + len; v++)
            if ((unsigned char)*v < 0x20 && *v != '\t') {
                why = "control characters are not allowed in header values";
                break;
            }
        if (name_is(p, nlen, "content-length"))
            n_cl++;
        else if (name_is(p, nlen, "transfer-encoding"))
            n_te++;
        p = eol + 1;
    }
    if (!why && n_cl > 1)
        why = "more than one Content-Length header";
    else if (!why && n_cl && n_te)
        why = "both Content-Length and Transfer-Encoding";
    else if (!why && n_te > 1)
        why = "more than one Transfer-Encoding header";
    if (why) req->http1_is_persistent = 0;
    return why;
}
