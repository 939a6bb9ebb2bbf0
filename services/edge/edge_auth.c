/*  edge_auth - OpenID Connect sign-in, sessions and CSRF (see the header).
 *
 *  /auth/login: discovery (once, cached), then a 302 to the provider's
 *  authorization endpoint with response_type=code, state, nonce and an S256
 *  code challenge. state, nonce, the PKCE verifier, the return path and the
 *  time are sealed (XChaCha20-Poly1305, key derived from the client secret so
 *  every edge replica can open it) into the `lk_oidc` cookie: HttpOnly,
 *  Secure, SameSite=Lax (the callback is a top-level navigation from the
 *  provider), Path=/auth/, 10 minutes.
 *  /auth/callback: the cookie must open and its state match (constant time);
 *  the code is exchanged at the token endpoint with the verifier (client
 *  secret as HTTP Basic); the ID token is verified (edge_jwt: JWKS cached,
 *  refetched on an unknown kid at most once a minute); its claims go to the
 *  vault (`sso.login`), which maps them to an active SCIM user and opens a
 *  session. The session token goes only into the `lk_session` cookie
 *  (HttpOnly; Secure; SameSite=Strict; Path=/), never into a log or a body.
 *  Every sign-in outcome is audited (`admin.sso.login`, with the user id or
 *  the refusal code); logouts too.
 */
#include "edge_auth.h"

#include <jansson.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "edge.h"
#include "edge_http.h"
#include "edge_jwt.h"
#include "edge_upstream.h"
#include "lk_buf.h"
#include "lk_log.h"
#include "lk_util.h"

#define PREAUTH_COOKIE  "lk_oidc"
#define SESSION_COOKIE  "lk_session"
#define PREAUTH_TTL_S   600
#define RETURN_MAX      512
#define FETCH_MAX_BYTES (256 * 1024)
#define JWKS_REFRESH_MS 60000
#define SKEW_S          60

/* implemented in edge_admin.c: one admin.<op> audit event */
void edge_admin_audit_event(const char *rid, const char *op, const char *tenant, const char *actor,
                            const char *user, const char *source_ip, int status, const char *code);

static struct {
    int enabled;
    char issuer[512], client_id[256], redirect_uri[512], admin_origin[300];
    char *client_secret; /* sodium memory */
    uint8_t seal_key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    long cookie_max_age;
    /* discovery */
    int discovered;
    char authorization_endpoint[512], token_endpoint[512], jwks_uri[512];
    edge_jwks_t *jwks;
    int64_t jwks_fetched_ms;
} g_auth;

/* ------------------------------------------------------------- settings -- */

static void origin_of(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = strstr(url, "://");
    if (!p) return;
    const char *end = strchr(p + 3, '/');
    size_t n = end ? (size_t)(end - url) : strlen(url);
    if (n < cap) {
        memcpy(out, url, n);
        out[n] = '\0';
    }
}

void edge_auth_init(void)
{
    const char *iss = getenv("LUMKEY_OIDC_ISSUER"), *cid = getenv("LUMKEY_OIDC_CLIENT_ID");
    const char *redir = getenv("LUMKEY_OIDC_REDIRECT_URI"), *sec = getenv("LUMKEY_OIDC_CLIENT_SECRET");
    const char *sec_file = getenv("LUMKEY_OIDC_CLIENT_SECRET_FILE"), *origin = getenv("LUMKEY_ADMIN_ORIGIN");
    const char *ttl = getenv("LUMKEY_SSO_SESSION_TTL_S");
    g_auth.cookie_max_age = ttl && atol(ttl) > 0 ? atol(ttl) : 8 * 3600;
    if (origin && *origin) snprintf(g_auth.admin_origin, sizeof g_auth.admin_origin, "%s", origin);
    if (!iss || !*iss || !cid || !*cid || !redir || !*redir) {
        if (iss && *iss)
            lk_log_warn("SSO disabled: LUMKEY_OIDC_CLIENT_ID and LUMKEY_OIDC_REDIRECT_URI are needed");
        return;
    }
    snprintf(g_auth.issuer, sizeof g_auth.issuer, "%s", iss);
    snprintf(g_auth.client_id, sizeof g_auth.client_id, "%s", cid);
    snprintf(g_auth.redirect_uri, sizeof g_auth.redirect_uri, "%s", redir);
    if (!g_auth.admin_origin[0]) origin_of(redir, g_auth.admin_origin, sizeof g_auth.admin_origin);
    g_auth.client_secret = sodium_malloc(1024);
    if (!g_auth.client_secret) return;
    g_auth.client_secret[0] = '\0';
    if (sec_file && *sec_file) {
        FILE *f = fopen(sec_file, "r");
        size_t n = f ? fread(g_auth.client_secret, 1, 1023, f) : 0;
        if (f) fclose(f);
        while (n && (g_auth.client_secret[n - 1] == '\n' || g_auth.client_secret[n - 1] == '\r'))
            n--;
        g_auth.client_secret[n] = '\0';
        if (!f) lk_log_error("SSO: LUMKEY_OIDC_CLIENT_SECRET_FILE cannot be read");
    } else if (sec) {
        snprintf(g_auth.client_secret, 1024, "%s", sec);
    }
    if (g_auth.client_secret[0])
        crypto_generichash(g_auth.seal_key, sizeof g_auth.seal_key, (const uint8_t *)g_auth.client_secret,
                           strlen(g_auth.client_secret), (const uint8_t *)"lumkey oidc pre-auth cookie v1",
                           30);
    else
        randombytes_buf(g_auth.seal_key, sizeof g_auth.seal_key); /* public client: this replica only */
    g_auth.enabled = 1;
    lk_log_info("SSO enabled: issuer %s, client %s", g_auth.issuer, g_auth.client_id);
}

json_t *edge_auth_status(void)
{
    if (!g_auth.enabled) return json_pack("{s:b}", "enabled", 0);
    return json_pack("{s:b,s:s,s:s,s:s,s:b,s:I}", "enabled", 1, "issuer", g_auth.issuer, "client_id",
                     g_auth.client_id, "redirect_uri", g_auth.redirect_uri, "discovered", g_auth.discovered,
                     "jwks_keys", (json_int_t)edge_jwks_count(g_auth.jwks));
}

void edge_auth_shutdown(void)
{
    edge_jwks_free(&g_auth.jwks);
    if (g_auth.client_secret) sodium_free(g_auth.client_secret);
    g_auth.client_secret = NULL;
    sodium_memzero(g_auth.seal_key, sizeof g_auth.seal_key);
}

/* -------------------------------------------------------------- helpers -- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The URL-decoded query parameter name into out; 1 found, 0 absent, -1 too long / malformed. */
static int query_param(h2o_req_t *req, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    if (req->query_at == SIZE_MAX) return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nl = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (eq && (size_t)(eq - q) == nl && memcmp(q, name, nl) == 0) {
            size_t n = 0;
            for (const char *p = eq + 1; p < stop; p++) {
                int c = (unsigned char)*p;
                if (c == '+')
                    c = ' ';
                else if (c == '%') {
                    if (stop - p < 3 || hexval(p[1]) < 0 || hexval(p[2]) < 0) return -1;
                    c = hexval(p[1]) * 16 + hexval(p[2]);
                    p += 2;
                }
                if (c == 0 || n + 1 >= cap) return -1;
                out[n++] = (char)c;
            }
            out[n] = '\0';
            return 1;
        }
        q = stop + 1;
    }
    return 0;
}

static void bput(lk_buf_t *b, int *bad, const void *s, size_t n)
{
    if (lk_buf_append(b, s, n) != 0) *bad = 1;
}

static void url_encode(lk_buf_t *b, int *bad, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
            c == '_' || c == '.' || c == '~') {
            bput(b, bad, (const char *)&c, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            bput(b, bad, e, 3);
        }
    }
}

static void b64url(char *out, size_t cap, const uint8_t *in, size_t n)
{
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* The value of cookie name (the last one wins nothing: a duplicate is refused). */
static h2o_iovec_t cookie_value(h2o_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    h2o_iovec_t found = h2o_iovec_init(NULL, 0);
    for (size_t i = 0; i < req->headers.size; i++) {
        if (req->headers.entries[i].name != &H2O_TOKEN_COOKIE->buf) continue;
        const char *p = req->headers.entries[i].value.base, *end = p + req->headers.entries[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
                if (found.base) return h2o_iovec_init(NULL, 0); /* twice: ambiguous, refused */
                found = h2o_iovec_init(p + nl + 1, (size_t)(stop - p - nl - 1));
            }
            p = stop;
        }
    }
    return found;
}

h2o_iovec_t edge_auth_session_cookie(h2o_req_t *req)
{
    h2o_iovec_t v = cookie_value(req, SESSION_COOKIE);
    if (!v.base || v.len != 47 || memcmp(v.base, "lks_", 4) != 0) return h2o_iovec_init(NULL, 0);
    for (size_t i = 4; i < v.len; i++) {
        char c = v.base[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '_'))
            return h2o_iovec_init(NULL, 0);
    }
    return v;
}

int edge_auth_unsafe_method(h2o_req_t *req)
{
    return !(h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
             h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")) ||
             h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")));
}

const char *edge_auth_csrf_precheck(h2o_req_t *req, h2o_iovec_t *csrf)
{
    int dup = 0;
    h2o_iovec_t origin = edge_http_header(req, "origin", &dup);
    if (dup) return "The Origin header appears more than once.";
    if (origin.base) {
        int ok = g_auth.admin_origin[0] &&
                 h2o_memis(origin.base, origin.len, g_auth.admin_origin, strlen(g_auth.admin_origin));
        if (!ok) { /* else the listener's own origin: scheme://Host */
            char own[320];
            int n = snprintf(own, sizeof own, "%s://%.*s",
                             req->scheme == &H2O_URL_SCHEME_HTTPS ? "https" : "http",
                             (int)(req->authority.len > 256 ? 0 : req->authority.len), req->authority.base);
            ok = n > 0 && (size_t)n < sizeof own && req->authority.len &&
                 h2o_memis(origin.base, origin.len, own, (size_t)n);
        }
        if (!ok) return "The request's Origin is not the admin console's.";
    }
    *csrf = edge_http_header(req, "x-csrf-token", &dup);
    if (dup || !csrf->base || csrf->len == 0 || csrf->len > 128)
        return "A state-changing request with a session cookie needs the X-CSRF-Token header.";
    return NULL;
}

int edge_auth_csrf_equal(h2o_iovec_t presented, lk_str_t want)
{
    return want.len > 0 && presented.len == want.len &&
           sodium_memcmp(presented.base, want.ptr, want.len) == 0;
}

/* A return path must be same-origin and relative: "/x...", never "//host" or "/\host" or with control bytes.
 */
static int return_ok(const char *r)
{
    if (r[0] != '/' || r[1] == '/' || r[1] == '\\') return 0;
    for (const char *p = r; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '\\') return 0;
    return 1;
}

/* ------------------------------------------------------------- fetches -- */

typedef void (*fetch_cb)(void *data, int status, const char *body, size_t len, const char *err);

typedef struct {
    edge_upstream_req_t *u;
    lk_buf_t body;    /* answer, secret memory (a token response holds tokens) */
    lk_buf_t reqbody; /* request body, secret memory */
    int status;
    fetch_cb cb;
    void *data;
} fetch_t;

static void fetch_free(fetch_t *f)
{
    lk_buf_free(&f->body);
    lk_buf_free(&f->reqbody);
    free(f);
}

static int f_on_head(void *data, int status, h2o_iovec_t ctype)
{
    fetch_t *f = data;
    f->status = status;
    return 0;
}

static int f_on_body(void *data, const char *bytes, size_t len)
{
    fetch_t *f = data;
    if (f->body.len + len > FETCH_MAX_BYTES || lk_buf_append(&f->body, bytes, len) != 0) {
        f->u = NULL; /* the handle is gone once we return -1 */
        f->cb(f->data, 0, NULL, 0, "the answer is too large");
        fetch_free(f);
        return -1;
    }
    return 0;
}

static void f_on_done(void *data, const char *err, int before_head)
{
    fetch_t *f = data;
    f->u = NULL;
    f->cb(f->data, f->status, (const char *)f->body.data, f->body.len, err);
    fetch_free(f);
}

static const edge_upstream_cbs_t FETCH_CBS = {f_on_head, f_on_body, f_on_done};

/* GET (form NULL) or POST form of url. NULL on immediate failure (no callback). */
static fetch_t *fetch_start(const char *url, const char *form, const char *head_extra, fetch_cb cb,
                            void *data)
{
    edge_origin_t o;
    if (edge_origin_parse(url, &o) != 0) {
        lk_log_warn("SSO: an identity provider URL is not an absolute http(s) URL without a query");
        return NULL;
    }
    fetch_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    lk_buf_init(&f->body, 1);
    lk_buf_init(&f->reqbody, 1);
    f->cb = cb;
    f->data = data;
    if (form && lk_buf_append(&f->reqbody, form, strlen(form)) != 0) {
        fetch_free(f);
        return NULL;
    }
    static const char accept[] = "Accept: application/json\r\n";
    char extra[1400];
    snprintf(extra, sizeof extra, "%s%s", accept, head_extra ? head_extra : "");
    f->u = edge_upstream_request(g_edge->upstreams, &o, form ? "POST" : "GET",
                                 form ? "application/x-www-form-urlencoded" : NULL, "", extra, strlen(extra),
                                 h2o_iovec_init(f->reqbody.data, f->reqbody.len), &FETCH_CBS, f);
    sodium_memzero(extra, sizeof extra);
    if (!f->u) {
        fetch_free(f);
        return NULL;
    }
    return f;
}

static void fetch_cancel(fetch_t *f)
{
    if (!f) return;
    edge_upstream_cancel(f->u);
    fetch_free(f);
}

/* ----------------------------------------------------- the request state -- */

typedef enum { A_LOGIN, A_CALLBACK, A_SESSION, A_LOGOUT } akind_t;

typedef struct auth {
    h2o_req_t *req;
    akind_t kind;
    char rid[LK_RID_LEN + 1];
    char source_ip[64];
    fetch_t *fetch;
    edge_call_t *call;
    char ret[RETURN_MAX + 1];
    char state[64], nonce[64], verifier[64];
    char code[1024];
    char *id_token; /* malloc; from the token response */
    int jwks_tried;
    char tenant[128], actor[80], session_id[80];
    void (*after_discovery)(struct auth *a);
} auth_t;

static void on_auth_dispose(void *p)
{
    auth_t *a = p;
    fetch_cancel(a->fetch);
    a->fetch = NULL;
    edge_rpc_cancel(g_edge->rpc, a->call);
    a->call = NULL;
    if (a->id_token) {
        sodium_memzero(a->id_token, strlen(a->id_token));
        free(a->id_token);
    }
    sodium_memzero(a->code, sizeof a->code);
    sodium_memzero(a->verifier, sizeof a->verifier);
}

static const char *op_name(akind_t k)
{
    return k == A_LOGOUT ? "sso.logout" : "sso.login";
}

static void fail(auth_t *a, int status, const char *code, const char *msg)
{
    if (a->kind == A_CALLBACK || a->kind == A_LOGOUT)
        edge_admin_audit_event(a->rid, op_name(a->kind), a->tenant, a->actor, "", a->source_ip, status, code);
    edge_http_send_error(a->req, status, a->rid, NULL, code, msg);
}

static void send_redirect(auth_t *a, const char *location, size_t len)
{
    static h2o_generator_t gen = {NULL, NULL};
    h2o_req_t *req = a->req;
    req->res.status = 302;
    req->res.reason = "Found";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, location, len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    edge_http_add_common_headers(req, 302, a->rid);
    req->res.content_length = 0;
    h2o_start_response(req, &gen);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

static void add_cookie(h2o_req_t *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_cookie(h2o_req_t *req, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof buf)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SET_COOKIE, NULL,
                       h2o_strdup(&req->pool, buf, (size_t)n).base, (size_t)n);
    sodium_memzero(buf, sizeof buf);
}

/* ------------------------------------------------------------ discovery -- */

static void on_discovery(void *data, int status, const char *body, size_t len, const char *err)
{
    auth_t *a = data;
    a->fetch = NULL;
    json_t *doc = !err && status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *iss = json_string_value(json_object_get(doc, "issuer"));
    const char *ae = json_string_value(json_object_get(doc, "authorization_endpoint"));
    const char *te = json_string_value(json_object_get(doc, "token_endpoint"));
    const char *ju = json_string_value(json_object_get(doc, "jwks_uri"));
    if (!iss || !ae || !te || !ju || strcmp(iss, g_auth.issuer) != 0 || strlen(ae) >= 512 ||
        strlen(te) >= 512 || strlen(ju) >= 512) {
        json_decref(doc);
        lk_log_warn(
            "SSO: the identity provider's discovery document is unavailable or does not match the issuer "
            "(status %d%s%s)",
            status, err ? ", " : "", err ? err : "");
        fail(a, 502, "idp_unavailable",
             "The identity provider's configuration could not be read; please retry.");
        return;
    }
    snprintf(g_auth.authorization_endpoint, 512, "%s", ae);
    snprintf(g_auth.token_endpoint, 512, "%s", te);
    snprintf(g_auth.jwks_uri, 512, "%s", ju);
    g_auth.discovered = 1;
    json_decref(doc);
    a->after_discovery(a);
}

static void with_discovery(auth_t *a, void (*next)(auth_t *))
{
    if (g_auth.discovered) {
        next(a);
        return;
    }
    a->after_discovery = next;
    char url[600];
    size_t il = strlen(g_auth.issuer);
    snprintf(url, sizeof url, "%.*s/.well-known/openid-configuration",
             (int)(il && g_auth.issuer[il - 1] == '/' ? il - 1 : il), g_auth.issuer);
    a->fetch = fetch_start(url, NULL, NULL, on_discovery, a);
    if (!a->fetch)
        fail(a, 502, "idp_unavailable", "The identity provider could not be reached; please retry.");
}

/* ---------------------------------------------------------------- login -- */

/* The sealed pre-auth cookie: base64url(nonce24 || AEAD(time|state|nonce|verifier|return)). */
static void login_go(auth_t *a)
{
    uint8_t rs[32], rn[32], rv[32], digest[32];
    randombytes_buf(rs, sizeof rs);
    randombytes_buf(rn, sizeof rn);
    randombytes_buf(rv, sizeof rv);
    b64url(a->state, sizeof a->state, rs, sizeof rs);
    b64url(a->nonce, sizeof a->nonce, rn, sizeof rn);
    b64url(a->verifier, sizeof a->verifier, rv, sizeof rv);
    char challenge[64];
    SHA256((const unsigned char *)a->verifier, strlen(a->verifier), digest);
    b64url(challenge, sizeof challenge, digest, sizeof digest);
    char plain[64 * 3 + RETURN_MAX + 64];
    int pn = snprintf(plain, sizeof plain, "%lld\n%s\n%s\n%s\n%s", (long long)(lk_now_ms() / 1000), a->state,
                      a->nonce, a->verifier, a->ret);
    uint8_t sealed[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + sizeof plain +
                   crypto_aead_xchacha20poly1305_ietf_ABYTES];
    unsigned long long clen = 0;
    randombytes_buf(sealed, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, &clen,
                                               (const uint8_t *)plain, (unsigned long long)pn,
                                               (const uint8_t *)PREAUTH_COOKIE, strlen(PREAUTH_COOKIE), NULL,
                                               sealed, g_auth.seal_key);
    sodium_memzero(plain, sizeof plain);
    char cookie[sizeof sealed * 4 / 3 + 8];
    b64url(cookie, sizeof cookie, sealed, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + (size_t)clen);
    add_cookie(a->req, PREAUTH_COOKIE "=%s; Path=/auth/; Max-Age=%d; HttpOnly; Secure; SameSite=Lax", cookie,
               PREAUTH_TTL_S);
    sodium_memzero(cookie, sizeof cookie);
    lk_buf_t loc;
    int bad = 0;
    lk_buf_init(&loc, 0);
    bput(&loc, &bad, g_auth.authorization_endpoint, strlen(g_auth.authorization_endpoint));
    bput(&loc, &bad, strchr(g_auth.authorization_endpoint, '?') ? "&" : "?", 1);
    bput(&loc, &bad, H2O_STRLIT("response_type=code&scope=openid%20email%20profile&client_id="));
    url_encode(&loc, &bad, g_auth.client_id);
    bput(&loc, &bad, H2O_STRLIT("&redirect_uri="));
    url_encode(&loc, &bad, g_auth.redirect_uri);
    bput(&loc, &bad, H2O_STRLIT("&state="));
    url_encode(&loc, &bad, a->state);
    bput(&loc, &bad, H2O_STRLIT("&nonce="));
    url_encode(&loc, &bad, a->nonce);
    bput(&loc, &bad, H2O_STRLIT("&code_challenge_method=S256&code_challenge="));
    url_encode(&loc, &bad, challenge);
    if (bad) {
        lk_buf_free(&loc);
        edge_http_send_error(a->req, 500, a->rid, NULL, "internal_error", "Out of memory.");
        return;
    }
    h2o_iovec_t l = h2o_strdup(&a->req->pool, (const char *)loc.data, loc.len);
    lk_buf_free(&loc);
    send_redirect(a, l.base, l.len);
}

/* Opens the pre-auth cookie into a (state, nonce, verifier, ret). 0 / -1. */
static int open_preauth(auth_t *a)
{
    h2o_iovec_t v = cookie_value(a->req, PREAUTH_COOKIE);
    if (!v.base || v.len == 0 || v.len > 2048) return -1;
    uint8_t raw[2048];
    size_t rl = 0;
    const char *end = NULL;
    if (sodium_base642bin(raw, sizeof raw, v.base, v.len, NULL, &rl, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        rl < crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)
        return -1;
    char plain[2048];
    unsigned long long pl = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            (uint8_t *)plain, &pl, NULL, raw + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
            rl - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, (const uint8_t *)PREAUTH_COOKIE,
            strlen(PREAUTH_COOKIE), raw, g_auth.seal_key) != 0 ||
        pl >= sizeof plain)
        return -1;
    plain[pl] = '\0';
    char *save = NULL, *t = strtok_r(plain, "\n", &save), *s = strtok_r(NULL, "\n", &save),
         *n = strtok_r(NULL, "\n", &save), *vf = strtok_r(NULL, "\n", &save),
         *r = strtok_r(NULL, "\n", &save);
    int ok = t && s && n && vf && r && strlen(s) < sizeof a->state && strlen(n) < sizeof a->nonce &&
             strlen(vf) < sizeof a->verifier && strlen(r) <= RETURN_MAX;
    long long at = ok ? atoll(t) : 0, now = (long long)(lk_now_ms() / 1000);
    if (ok && (now - at > PREAUTH_TTL_S || at > now + SKEW_S)) ok = 0;
    if (ok) {
        snprintf(a->state, sizeof a->state, "%s", s);
        snprintf(a->nonce, sizeof a->nonce, "%s", n);
        snprintf(a->verifier, sizeof a->verifier, "%s", vf);
        snprintf(a->ret, sizeof a->ret, "%s", r);
    }
    sodium_memzero(plain, sizeof plain);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------- callback -- */

static void on_sso_login(void *data, const lk_msg_t *reply)
{
    auth_t *a = data;
    a->call = NULL;
    if (!reply || reply->env.type != LK_MSG_ADMIN_REP) {
        fail(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
        return;
    }
    const lk_admin_rep_t *r = &reply->u.admin_rep;
    json_t *out = json_loadb(r->json.ptr, r->json.len, 0, NULL);
    if (r->status != LK_ST_OK) {
        const char *code = json_string_value(json_object_get(json_object_get(out, "error"), "code"));
        const char *msg = json_string_value(json_object_get(json_object_get(out, "error"), "message"));
        char c[64], m[300];
        snprintf(c, sizeof c, "%s", code ? code : "sign_in_refused");
        snprintf(m, sizeof m, "%s", msg ? msg : "Sign-in refused.");
        json_decref(out);
        fail(a, edge_http_status_of(r->status), c, m);
        return;
    }
    const char *tok = json_string_value(json_object_get(out, "session"));
    const char *uid = json_string_value(json_object_get(json_object_get(out, "user"), "id"));
    const char *uname = json_string_value(json_object_get(json_object_get(out, "user"), "user_name"));
    const char *tenant = json_string_value(json_object_get(out, "tenant"));
    if (!tok || !uid || !tenant) {
        json_decref(out);
        fail(a, 500, "internal_error", "Unexpected answer.");
        return;
    }
    add_cookie(a->req, PREAUTH_COOKIE "=; Path=/auth/; Max-Age=0; HttpOnly; Secure; SameSite=Lax");
    add_cookie(a->req, SESSION_COOKIE "=%s; Path=/; Max-Age=%ld; HttpOnly; Secure; SameSite=Strict", tok,
               g_auth.cookie_max_age);
    edge_admin_audit_event(a->rid, "sso.login", tenant, uid, uname ? uname : "", a->source_ip, 302, NULL);
    sodium_memzero((char *)tok, strlen(tok)); /* the edge's jansson frees with free(): wipe the token first */
    json_decref(out);
    send_redirect(a, a->ret, strlen(a->ret));
}

static void verify_and_login(auth_t *a);

static void on_jwks(void *data, int status, const char *body, size_t len, const char *err)
{
    auth_t *a = data;
    a->fetch = NULL;
    char e[200] = "";
    edge_jwks_t *k = !err && status == 200 ? edge_jwks_parse(body, len, e, sizeof e) : NULL;
    g_auth.jwks_fetched_ms = lk_now_ms();
    if (!k) {
        lk_log_warn("SSO: the identity provider's JWKS is unavailable (status %d%s%s)", status,
                    e[0] ? ": " : "", e);
        if (!g_auth.jwks) {
            fail(a, 502, "idp_unavailable",
                 "The identity provider's signing keys could not be read; please retry.");
            return;
        }
    } else {
        edge_jwks_free(&g_auth.jwks);
        g_auth.jwks = k;
    }
    verify_and_login(a);
}

static void verify_and_login(auth_t *a)
{
    int64_t now = lk_now_ms();
    if (!g_auth.jwks && !a->jwks_tried) {
        a->jwks_tried = 1;
        a->fetch = fetch_start(g_auth.jwks_uri, NULL, NULL, on_jwks, a);
        if (!a->fetch)
            fail(a, 502, "idp_unavailable", "The identity provider could not be reached; please retry.");
        return;
    }
    edge_jwt_expect_t x = {g_auth.issuer, g_auth.client_id, a->nonce, now / 1000, SKEW_S};
    json_t *claims = NULL;
    edge_jwt_rc_t rc = g_auth.jwks
                           ? edge_jwt_verify(g_auth.jwks, a->id_token, strlen(a->id_token), &x, &claims)
                           : EDGE_JWT_UNKNOWN_KID;
    if (rc == EDGE_JWT_UNKNOWN_KID && !a->jwks_tried && now - g_auth.jwks_fetched_ms >= JWKS_REFRESH_MS) {
        a->jwks_tried = 1; /* a key rotation: one refetch, at most once a minute */
        a->fetch = fetch_start(g_auth.jwks_uri, NULL, NULL, on_jwks, a);
        if (!a->fetch)
            fail(a, 502, "idp_unavailable", "The identity provider could not be reached; please retry.");
        return;
    }
    if (rc != EDGE_JWT_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "The identity provider's ID token was refused (%s).", edge_jwt_rc_code(rc));
        lk_log_warn("SSO: ID token refused: %s", edge_jwt_rc_code(rc));
        fail(a, 401, "invalid_id_token", msg);
        return;
    }
    json_t *in = json_object();
    static const char *const pass[] = {"sub", "email", "email_verified", "preferred_username"};
    for (size_t i = 0; i < sizeof pass / sizeof pass[0]; i++) {
        json_t *v = json_object_get(claims, pass[i]);
        if (v && (json_is_string(v) || json_is_boolean(v))) json_object_set(in, pass[i], v);
    }
    json_decref(claims);
    char *body = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    lk_msg_t m = {0};
    m.env.type = LK_MSG_ADMIN_REQ;
    m.env.rid = lk_str(a->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.admin_req.op = lk_str("sso.login");
    m.u.admin_req.json = lk_str(body ? body : "{}");
    a->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_VAULT, &m, on_sso_login, a);
    free(body);
    if (!a->call) fail(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
}

static void on_token(void *data, int status, const char *body, size_t len, const char *err)
{
    auth_t *a = data;
    a->fetch = NULL;
    json_t *doc = !err && status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *idt = json_string_value(json_object_get(doc, "id_token"));
    if (!idt || strlen(idt) > EDGE_JWT_MAX_LEN) {
        json_decref(doc);
        lk_log_warn("SSO: the token endpoint refused the code or answered without an ID token (status %d)",
                    status);
        fail(a, 401, "code_exchange_failed",
             "The identity provider did not accept the sign-in; please sign in again.");
        return;
    }
    a->id_token = strdup(idt);
    json_decref(doc);
    if (!a->id_token) {
        fail(a, 500, "internal_error", "Out of memory.");
        return;
    }
    verify_and_login(a);
}

static void callback_go(auth_t *a)
{
    lk_buf_t form;
    int bad = 0;
    lk_buf_init(&form, 1);
    bput(&form, &bad, H2O_STRLIT("grant_type=authorization_code&code="));
    url_encode(&form, &bad, a->code);
    bput(&form, &bad, H2O_STRLIT("&redirect_uri="));
    url_encode(&form, &bad, g_auth.redirect_uri);
    bput(&form, &bad, H2O_STRLIT("&client_id="));
    url_encode(&form, &bad, g_auth.client_id);
    bput(&form, &bad, H2O_STRLIT("&code_verifier="));
    url_encode(&form, &bad, a->verifier);
    bput(&form, &bad, "", 1);
    char head[1300] = "";
    if (g_auth.client_secret &&
        g_auth.client_secret[0]) { /* client_secret_basic (RFC 6749 2.3.1: form-encoded parts) */
        lk_buf_t cred;
        lk_buf_init(&cred, 1);
        url_encode(&cred, &bad, g_auth.client_id);
        bput(&cred, &bad, ":", 1);
        url_encode(&cred, &bad, g_auth.client_secret);
        char b64[1200];
        if (cred.len < 850) {
            sodium_bin2base64(b64, sizeof b64, cred.data, cred.len, sodium_base64_VARIANT_ORIGINAL);
            snprintf(head, sizeof head, "Authorization: Basic %s\r\n", b64);
        }
        sodium_memzero(b64, sizeof b64);
        lk_buf_free(&cred);
    }
    a->fetch = bad ? NULL : fetch_start(g_auth.token_endpoint, (const char *)form.data, head, on_token, a);
    sodium_memzero(head, sizeof head);
    lk_buf_free(&form);
    if (!a->fetch)
        fail(a, 502, "idp_unavailable", "The identity provider could not be reached; please retry.");
}

/* ------------------------------------------------ session and logout -- */

static void on_logout_done(void *data, const lk_msg_t *reply)
{
    auth_t *a = data;
    a->call = NULL;
    if (!reply || reply->env.type != LK_MSG_ADMIN_REP || reply->u.admin_rep.status != LK_ST_OK) {
        fail(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
        return;
    }
    add_cookie(a->req, SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    edge_admin_audit_event(a->rid, "sso.logout", a->tenant, a->actor, "", a->source_ip, 200, NULL);
    edge_http_send_json(a->req, 200, a->rid, H2O_STRLIT("{\"ok\":true}"));
}

static void on_session_auth(void *data, const lk_msg_t *reply)
{
    auth_t *a = data;
    a->call = NULL;
    if (!reply) {
        fail(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
        return;
    }
    if (reply->env.type != LK_MSG_ADMIN_AUTH_REP || !lk_str_eq(reply->u.admin_auth_rep.via, "session")) {
        int st = reply->env.type == LK_MSG_ERROR ? edge_http_status_of(reply->u.error.status) : 500;
        if (st == 401)
            add_cookie(a->req, SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
        fail(a, st, st == 401 ? "not_signed_in" : "auth_unavailable",
             st == 401 ? "No valid session: please sign in." : "The session could not be checked.");
        return;
    }
    const lk_admin_auth_rep_t *au = &reply->u.admin_auth_rep;
    lk_str_copy(a->tenant, sizeof a->tenant, au->tenant);
    lk_str_copy(a->actor, sizeof a->actor, au->token_id);
    lk_str_copy(a->session_id, sizeof a->session_id, au->session_id);
    if (a->kind == A_LOGOUT) {
        h2o_iovec_t csrf;
        const char *why = edge_auth_csrf_precheck(a->req, &csrf);
        if (why || !edge_auth_csrf_equal(csrf, au->csrf)) {
            fail(a, 403, "csrf_failed", why ? why : "The X-CSRF-Token does not match the session's.");
            return;
        }
        lk_msg_t m = {0};
        m.env.type = LK_MSG_ADMIN_REQ;
        m.env.rid = lk_str(a->rid);
        m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
        m.u.admin_req.op = lk_str("sso.logout");
        m.u.admin_req.tenant = au->tenant;
        m.u.admin_req.actor = au->token_id;
        m.u.admin_req.role = au->role;
        m.u.admin_req.object_id = au->session_id;
        a->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_VAULT, &m, on_logout_done, a);
        if (!a->call) fail(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
        return;
    }
    char exp[32];
    time_t t = (time_t)(au->expires_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(exp, sizeof exp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *out = json_pack("{s:{s:s%,s:s%,s:s%,s:s%},s:s%,s:s%,s:s%,s:s}", "user", "id", au->token_id.ptr,
                            au->token_id.len, "user_name", au->user_name.ptr, au->user_name.len,
                            "display_name", au->display_name.ptr ? au->display_name.ptr : "",
                            au->display_name.len, "email", au->email.ptr ? au->email.ptr : "", au->email.len,
                            "tenant", au->tenant.ptr, au->tenant.len, "role", au->role.ptr, au->role.len,
                            "csrf_token", au->csrf.ptr, au->csrf.len, "expires_at", exp);
    char *s = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (!s) {
        fail(a, 500, "internal_error", "Out of memory.");
        return;
    }
    h2o_add_header(&a->req->pool, &a->req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    edge_http_send_json(a->req, 200, a->rid, s, strlen(s));
    free(s);
}

/* -------------------------------------------------------------- routing -- */

int edge_auth_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    auth_t *a = h2o_mem_alloc_shared(&req->pool, sizeof *a, on_auth_dispose);
    memset(a, 0, sizeof *a);
    a->req = req;
    lk_rid_new(a->rid);
    edge_http_peer(req, a->source_ip, sizeof a->source_ip);
    h2o_iovec_t p = req->path_normalized;
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/auth/login")))
        a->kind = A_LOGIN;
    else if (h2o_memis(p.base, p.len, H2O_STRLIT("/auth/callback")))
        a->kind = A_CALLBACK;
    else if (h2o_memis(p.base, p.len, H2O_STRLIT("/auth/session")))
        a->kind = A_SESSION;
    else if (h2o_memis(p.base, p.len, H2O_STRLIT("/auth/logout")))
        a->kind = A_LOGOUT;
    else {
        edge_http_send_error(req, 404, a->rid, NULL, "not_found", "No such sign-in endpoint.");
        return 0;
    }
    if ((a->kind == A_LOGOUT && !post) || (a->kind != A_LOGOUT && !get)) {
        edge_http_send_error(req, 405, a->rid, NULL, "method_not_allowed",
                             "This method is not allowed here.");
        return 0;
    }
    const char *framing = edge_http_framing_error(req);
    if (framing) {
        edge_http_send_error(req, 400, a->rid, NULL, "malformed_request", framing);
        return 0;
    }
    if (a->kind == A_SESSION || a->kind == A_LOGOUT) {
        h2o_iovec_t tok = edge_auth_session_cookie(req);
        if (!tok.base) {
            fail(a, 401, "not_signed_in", "No valid session: please sign in.");
            return 0;
        }
        a->call = edge_admin_auth_call(a->rid, tok, on_session_auth, a);
        if (!a->call) fail(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
        return 0;
    }
    if (!g_auth.enabled) {
        edge_http_send_error(req, 404, a->rid, NULL, "sso_not_configured",
                             "Single sign-on is not configured (LUMKEY_OIDC_ISSUER, LUMKEY_OIDC_CLIENT_ID, "
                             "LUMKEY_OIDC_REDIRECT_URI).");
        return 0;
    }
    if (a->kind == A_LOGIN) {
        int r = query_param(req, "return", a->ret, sizeof a->ret);
        if (r == 0) snprintf(a->ret, sizeof a->ret, "/console/");
        if (r < 0 || !return_ok(a->ret)) {
            edge_http_send_error(req, 400, a->rid, NULL, "invalid_return",
                                 "`return` must be a path on this server (starting with a single /).");
            return 0;
        }
        with_discovery(a, login_go);
        return 0;
    }
    /* callback */
    char err[128];
    if (query_param(req, "error", err, sizeof err) != 0) {
        fail(a, 401, "idp_refused", "The identity provider refused the sign-in.");
        return 0;
    }
    char state[64];
    if (query_param(req, "code", a->code, sizeof a->code) != 1 || !a->code[0] ||
        query_param(req, "state", state, sizeof state) != 1) {
        fail(a, 400, "invalid_callback", "The sign-in callback needs `code` and `state`.");
        return 0;
    }
    if (open_preauth(a) != 0) {
        fail(a, 400, "invalid_state", "The sign-in expired or was started elsewhere; please sign in again.");
        return 0;
    }
    if (strlen(state) != strlen(a->state) || sodium_memcmp(state, a->state, strlen(state)) != 0) {
        fail(a, 400, "invalid_state", "The sign-in state does not match; please sign in again.");
        return 0;
    }
    if (!return_ok(a->ret)) snprintf(a->ret, sizeof a->ret, "/console/");
    with_discovery(a, callback_go);
    return 0;
}
