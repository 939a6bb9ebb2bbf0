/*  edge_slack - Slack interactivity and one-time links (see edge_slack.h). */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "edge_http.h"
#include "edge_slack.h"
#include "lk_log.h"
#include "lk_util.h"

#define SLACK_WINDOW_S 300
#define SECRET_MAX     256

static char *g_secret; /* sodium memory; NULL = Slack off */
static size_t g_secret_len;
static char g_tenant[128] = "default";

int edge_slack_init(void)
{
    const char *t = getenv("LUMKEY_APPROVAL_TENANT");
    if (t && *t) snprintf(g_tenant, sizeof g_tenant, "%s", t);
    const char *path = getenv("LUMKEY_SLACK_SIGNING_SECRET_FILE");
    if (!path || !*path) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        lk_log_error("cannot open LUMKEY_SLACK_SIGNING_SECRET_FILE");
        return -1;
    }
    g_secret = sodium_malloc(SECRET_MAX + 1);
    size_t n = g_secret ? fread(g_secret, 1, SECRET_MAX + 1, f) : 0;
    fclose(f);
    while (n && (g_secret[n - 1] == '\n' || g_secret[n - 1] == '\r' || g_secret[n - 1] == ' '))
        n--;
    if (!g_secret || n == 0 || n > SECRET_MAX) {
        lk_log_error("the Slack signing secret file is empty or too long");
        return -1;
    }
    g_secret_len = n;
    lk_log_info("Slack interactivity on /slack/interactivity");
    return 0;
}

typedef struct {
    h2o_req_t *req;
    edge_call_t *call;
    char rid[LK_RID_LEN + 1];
    int slack; /* answer in Slack's way (200 + text) rather than JSON errors */
    const char *op;
    char actor[48]; /* "slack:<user id>" or "link" */
    char hold[64];
    char source_ip[64];
} pending_t;

static void on_audit(void *data, const lk_msg_t *reply)
{
    (void)data;
    if (!reply || reply->env.type != LK_MSG_AUDIT_REP)
        lk_log(LK_LOG_ERROR, NULL, "audit did not confirm an approval event");
}

/* One "admin.holds.decide" / "admin.holds.redeem_link" event, like the admin API's: the approver (Slack user
 * or "link") as actor, the hold as object, the outcome; refused signatures included. Fire and forget. */
static void audit_decision(pending_t *x, int status, const char *code)
{
    char kind[64], event_id[LK_UUID_LEN + 1];
    snprintf(kind, sizeof kind, "admin.%s", x->op);
    lk_uuid_derive(event_id, x->rid, kind);
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_AUDIT;
    m.env.rid = lk_str(x->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    lk_audit_t *ev = &m.u.audit;
    ev->event_id = lk_str(event_id);
    ev->kind = lk_str(kind);
    ev->time_ms = lk_now_ms();
    ev->tenant = lk_str(g_tenant);
    ev->key_id = lk_str(x->actor);
    ev->user = lk_str(x->actor);
    ev->source_ip = lk_str(x->source_ip);
    ev->endpoint = lk_str(x->op);
    ev->decision = lk_str(status < 400 ? "allow" : "deny");
    ev->rule_id = lk_str(x->hold);
    ev->http_status = status;
    ev->prompt_tokens = ev->completion_tokens = ev->total_tokens = -1;
    ev->error_code = lk_str(status < 400 ? "" : code);
    if (!edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_audit, NULL))
        lk_log(LK_LOG_ERROR, x->rid, "audit unreachable: %s event not recorded", kind);
}

static void on_dispose(void *p)
{
    pending_t *x = p;
    edge_rpc_cancel(g_edge->rpc, x->call);
}

static void send_text(h2o_req_t *req, int status, const char *rid, const char *ctype, const char *text)
{
    static h2o_generator_t generator = {NULL, NULL};
    size_t len = strlen(text);
    req->res.status = status;
    req->res.reason = edge_http_reason(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    edge_http_add_common_headers(req, status, rid);
    h2o_start_response(req, &generator);
    h2o_iovec_t body = h2o_strdup(&req->pool, text, len);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

/* The worker's answer to holds.decide / holds.redeem_link. */
static void on_decided(void *data, const lk_msg_t *reply)
{
    pending_t *x = data;
    x->call = NULL;
    int st = !reply                                ? 503
             : reply->env.type == LK_MSG_ADMIN_REP ? edge_http_status_of(reply->u.admin_rep.status)
             : reply->env.type == LK_MSG_ERROR     ? edge_http_status_of(reply->u.error.status)
                                                   : 500;
    audit_decision(x, st,
                   st == 409   ? "already_decided"
                   : st == 403 ? "forbidden"
                   : st == 404 ? "not_found"
                               : "service_unavailable");
    const char *what = st == 200   ? "Done: the decision was recorded."
                       : st == 409 ? "This request was already decided, timed out, or the link expired."
                       : st == 403 ? "You cannot decide this request (your own request, or a bad link)."
                       : st == 404 ? "No such held request."
                                   : "The approval service is unavailable; please retry.";
    if (x->slack) {
        /* Slack shows a non-200 as a failure: answer 200 with the outcome, except when nothing was decided
         * for lack of the service (then Slack's retry can help) */
        char body[256];
        snprintf(body, sizeof body,
                 "{\"response_type\":\"ephemeral\",\"replace_original\":false,\"text\":\"%s\"}", what);
        edge_http_send_json(x->req, st >= 500 ? 503 : 200, x->rid, body, strlen(body));
    } else {
        char html[512];
        snprintf(html, sizeof html, "<!doctype html><title>Lumkey</title><p>%s</p>\n", what);
        send_text(x->req, st, x->rid, "text/html; charset=utf-8", html);
    }
}

static void call_approval(pending_t *x, const char *op, const char *actor, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        edge_http_send_error(x->req, 500, x->rid, NULL, "internal_error", "Could not build the request.");
        return;
    }
    lk_msg_t m = {0};
    m.env.type = LK_MSG_ADMIN_REQ;
    m.env.rid = lk_str(x->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.admin_req.op = lk_str(op);
    m.u.admin_req.tenant = lk_str(g_tenant);
    m.u.admin_req.actor = lk_str(actor);
    m.u.admin_req.role = LK_STR_LIT("edge");
    m.u.admin_req.json = lk_str(text);
    x->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_APPROVAL, &m, on_decided, x);
    free(text);
    if (!x->call) on_decided(x, NULL);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The url-decoded value of name in a form body, into the request pool. {NULL,0} if absent or malformed. */
static h2o_iovec_t form_value(h2o_req_t *req, const char *body, size_t len, const char *name)
{
    size_t nl = strlen(name);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1;
            char *out = h2o_mem_alloc_pool(&req->pool, (size_t)(stop - v) + 1);
            size_t o = 0;
            for (const char *q = v; q < stop; q++) {
                if (*q == '+') {
                    out[o++] = ' ';
                } else if (*q == '%') {
                    if (stop - q < 3 || hexval(q[1]) < 0 || hexval(q[2]) < 0) return h2o_iovec_init(NULL, 0);
                    out[o++] = (char)(hexval(q[1]) * 16 + hexval(q[2]));
                    q += 2;
                } else {
                    out[o++] = *q;
                }
            }
            out[o] = '\0';
            return h2o_iovec_init(out, o);
        }
        p = stop + 1;
    }
    return h2o_iovec_init(NULL, 0);
}

/* X-Slack-Signature over the raw body, within the window, constant time. */
static int slack_verified(h2o_req_t *req)
{
    int dup = 0;
    h2o_iovec_t ts = edge_http_header(req, "x-slack-request-timestamp", &dup);
    h2o_iovec_t sig = edge_http_header(req, "x-slack-signature", &dup);
    if (dup || !ts.base || !sig.base || ts.len == 0 || ts.len > 12 || sig.len != 3 + 64) return 0;
    char tsz[16];
    memcpy(tsz, ts.base, ts.len);
    tsz[ts.len] = '\0';
    for (size_t i = 0; i < ts.len; i++)
        if (tsz[i] < '0' || tsz[i] > '9') return 0;
    long long t = atoll(tsz), now = lk_now_ms() / 1000;
    if (t < now - SLACK_WINDOW_S || t > now + SLACK_WINDOW_S) return 0;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const uint8_t *)g_secret, g_secret_len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"v0:", 3);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)ts.base, ts.len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)":", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)req->entity.base, req->entity.len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
    char want[3 + 64 + 1] = "v0=";
    sodium_bin2hex(want + 3, 65, mac, sizeof mac);
    return sodium_memcmp(want, sig.base, 3 + 64) == 0;
}

static int id_like(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              s[i] == '_' || s[i] == '-' || s[i] == '.'))
            return 0;
    return 1;
}

int edge_slack_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    (void)handler;
    pending_t *x = h2o_mem_alloc_shared(&req->pool, sizeof *x, on_dispose);
    memset(x, 0, sizeof *x);
    x->req = req;
    x->slack = 1;
    x->op = "holds.decide";
    lk_rid_new(x->rid);
    edge_http_peer(req, x->source_ip, sizeof x->source_ip);
    if (!g_secret) {
        edge_http_send_error(req, 404, x->rid, NULL, "not_found", "Slack interactivity is not configured.");
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        edge_http_send_error(req, 405, x->rid, NULL, "method_not_allowed", "POST only.");
        return 0;
    }
    const char *framing = edge_http_framing_error(req);
    if (framing || req->entity.len > 64 * 1024) {
        edge_http_send_error(req, 400, x->rid, NULL, "malformed_request", framing ? framing : "Too large.");
        return 0;
    }
    if (!slack_verified(req)) { /* before looking at the body */
        lk_log(LK_LOG_WARN, x->rid, "Slack request refused: bad or stale signature");
        snprintf(x->actor, sizeof x->actor, "slack");
        audit_decision(x, 401, "invalid_signature");
        edge_http_send_error(req, 401, x->rid, NULL, "invalid_signature",
                             "The Slack signature is not valid.");
        return 0;
    }
    h2o_iovec_t payload = form_value(req, req->entity.base, req->entity.len, "payload");
    json_t *p = payload.base ? json_loadb(payload.base, payload.len, 0, NULL) : NULL;
    json_t *act = json_array_get(json_object_get(p, "actions"), 0), *user = json_object_get(p, "user");
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *aid = json_string_value(json_object_get(act, "action_id"));
    const char *hold = json_string_value(json_object_get(act, "value"));
    const char *uid = json_string_value(json_object_get(user, "id"));
    const char *uname = json_string_value(json_object_get(user, "username"));
    int approve = aid && strcmp(aid, "lumkey_approve") == 0,
        reject = aid && strcmp(aid, "lumkey_reject") == 0;
    if (!type || strcmp(type, "block_actions") != 0 || !(approve || reject) || !hold || !id_like(hold, 64) ||
        strncmp(hold, "hold_", 5) != 0 || !uid || !id_like(uid, 32)) {
        json_decref(p);
        edge_http_send_error(req, 400, x->rid, NULL, "unsupported_payload", "Not a Lumkey hold action.");
        return 0;
    }
    char approver[48];
    snprintf(approver, sizeof approver, "slack:%s", uid);
    snprintf(x->actor, sizeof x->actor, "%s", approver);
    snprintf(x->hold, sizeof x->hold, "%s", hold);
    json_t *body = json_pack("{s:s,s:s,s:s,s:s}", "hold", hold, "action", approve ? "approve" : "reject",
                             "approver", approver, "approver_name", uname && id_like(uname, 64) ? uname : "");
    json_decref(p);
    lk_log(LK_LOG_INFO, x->rid, "Slack %s of a hold by %s", approve ? "approval" : "rejection", approver);
    call_approval(x, "holds.decide", approver, body);
    return 0;
}

int edge_links_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    (void)handler;
    pending_t *x = h2o_mem_alloc_shared(&req->pool, sizeof *x, on_dispose);
    memset(x, 0, sizeof *x);
    x->req = req;
    x->op = "holds.redeem_link";
    snprintf(x->actor, sizeof x->actor, "link");
    lk_rid_new(x->rid);
    edge_http_peer(req, x->source_ip, sizeof x->source_ip);
    static const char PREFIX[] = "/approvals/v1/links/";
    size_t pl = sizeof PREFIX - 1, n = req->path_normalized.len;
    char token[201];
    if (n <= pl || n - pl >= sizeof token || memcmp(req->path_normalized.base, PREFIX, pl) != 0) {
        edge_http_send_error(req, 404, x->rid, NULL, "not_found", "No such link.");
        return 0;
    }
    memcpy(token, req->path_normalized.base + pl, n - pl);
    token[n - pl] = '\0';
    if (!id_like(token, 200)) {
        edge_http_send_error(req, 404, x->rid, NULL, "not_found", "No such link.");
        return 0;
    }
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        /* GET never decides (link previews and mail scanners fetch links): a form that POSTs */
        int approve = strstr(token, ".approve.") != NULL;
        char html[600];
        snprintf(html, sizeof html,
                 "<!doctype html><title>Lumkey</title><form method=\"post\"><p>%s this held request?</p>"
                 "<button type=\"submit\">%s</button></form>\n",
                 approve ? "Approve" : "Reject", approve ? "Approve" : "Reject");
        send_text(req, 200, x->rid, "text/html; charset=utf-8", html);
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        edge_http_send_error(req, 405, x->rid, NULL, "method_not_allowed", "GET or POST only.");
        return 0;
    }
    size_t hl = strcspn(token, ".");
    if (hl < sizeof x->hold) memcpy(x->hold, token, hl); /* the hold the link names (checked by the worker) */
    call_approval(x, "holds.redeem_link", "link", json_pack("{s:s}", "token", token));
    return 0;
}
