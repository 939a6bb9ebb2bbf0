/*  edge_console - the web console's static files at /console/ (admin listener).
 *
 *  /console redirects to /console/, which serves index.html; /console/NAME
 *  serves the embedded file NAME (exact match against the table the build
 *  wrote from console/: no file system access, so no traversal). Anything
 *  else under /console/ is a 404 in the API's error shape; methods other than
 *  GET and HEAD are 405.
 *
 *  Every answer carries a strict Content-Security-Policy (scripts, styles and
 *  connections from this origin only; no inline script or style; no framing),
 *  X-Content-Type-Options: nosniff, X-Frame-Options: DENY,
 *  Referrer-Policy: no-referrer and Cache-Control: no-cache (the browser
 *  revalidates, so a new edge build is picked up at once). The console holds
 *  no secret of its own: it talks to /auth/... and /admin/v1/... like any
 *  other client, with the session cookie.
 */
#include "edge_console.h"

#include <string.h>

#include "edge_http.h"
#include "lk_util.h"

#define CONSOLE_CSP                                                                                          \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "    \
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

const edge_console_file_t *edge_console_find(const char *name, size_t len)
{
    if (len == 0 || len > 128) return NULL;
    for (size_t i = 0; i < edge_console_nfiles; i++) {
        const edge_console_file_t *f = &edge_console_files[i];
        if (strlen(f->name) == len && memcmp(f->name, name, len) == 0) return f;
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

const char *edge_console_content_type(const char *name)
{
    if (ends_with(name, ".html")) return "text/html; charset=utf-8";
    if (ends_with(name, ".js")) return "text/javascript; charset=utf-8";
    if (ends_with(name, ".css")) return "text/css; charset=utf-8";
    if (ends_with(name, ".svg")) return "image/svg+xml";
    if (ends_with(name, ".png")) return "image/png";
    return "application/octet-stream";
}

static void add_security_headers(h2o_req_t *req)
{
    h2o_mem_pool_t *pool = &req->pool;
    h2o_headers_t *hs = &req->res.headers;
    h2o_add_header_by_str(pool, hs, H2O_STRLIT("content-security-policy"), 0, NULL, H2O_STRLIT(CONSOLE_CSP));
    h2o_add_header_by_str(pool, hs, H2O_STRLIT("x-content-type-options"), 0, NULL, H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(pool, hs, H2O_STRLIT("x-frame-options"), 0, NULL, H2O_STRLIT("DENY"));
    h2o_add_header_by_str(pool, hs, H2O_STRLIT("referrer-policy"), 0, NULL, H2O_STRLIT("no-referrer"));
    h2o_add_header(pool, hs, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
}

static void send_file(h2o_req_t *req, const char *rid, const edge_console_file_t *f)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = f->len;
    const char *ct = edge_console_content_type(f->name);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ct, strlen(ct));
    add_security_headers(req);
    edge_http_add_common_headers(req, 200, rid);
    h2o_start_response(req, &generator);
    /* the embedded data is static: h2o sends it without a copy (HEAD: h2o sends no body) */
    h2o_iovec_t body = h2o_iovec_init(f->data, f->len);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

int edge_console_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    (void)handler;
    char rid[LK_RID_LEN + 1];
    lk_rid_new(rid);
    const char *path = req->path_normalized.base;
    size_t len = req->path_normalized.len;
    static const char base[] = "/console/";
    size_t bl = sizeof base - 1;
    int exact = h2o_memis(path, len, base, bl - 1); /* "/console" */
    if (!exact && (len < bl || memcmp(path, base, bl) != 0)) {
        add_security_headers(req);
        edge_http_send_error(req, 404, rid, NULL, "not_found", "No such console page.");
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        add_security_headers(req);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
        edge_http_send_error(req, 405, rid, NULL, "method_not_allowed", "The console is read with GET.");
        return 0;
    }
    if (exact) { /* relative links in index.html need the trailing slash */
        add_security_headers(req);
        edge_http_add_common_headers(req, 301, rid);
        h2o_send_redirect(req, 301, "Moved Permanently", H2O_STRLIT("/console/"));
        return 0;
    }
    const char *name = path + bl;
    size_t nl = len - bl;
    if (nl == 0) {
        name = "index.html";
        nl = strlen(name);
    }
    const edge_console_file_t *f = memchr(name, '/', nl) ? NULL : edge_console_find(name, nl);
    if (!f) {
        add_security_headers(req);
        edge_http_send_error(req, 404, rid, NULL, "not_found", "No such console file.");
        return 0;
    }
    send_file(req, rid, f);
    return 0;
}
