/*  edge_admin - the admin HTTP API (/admin/v1/...) and the health endpoints.
 *
 *  The edge only authenticates the admin token (vault ADMIN_AUTH), checks the
 *  role and routes the operation by name to the worker that owns it; the
 *  worker validates and answers with the JSON body. Request bodies (which may
 *  hold a provider secret) are wiped once handed on; answers that show a
 *  secret once are wiped when the request ends. Routes are exact paths or
 *  PREFIX{id}SUFFIX, the id checked for shape (key_/prov_ + alphanumerics)
 *  before any call and passed on as the object id.
 *
 *  Every admin request, answered or refused (401, 403, 404, ...), is audited:
 *  one AUDIT event "admin.<op>" (fire and forget, see proto/audit.md) naming
 *  the acting token id, the op, the object id, the status and the source
 *  address - never a token, key or body.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "edge_audit.h"
#include "edge_auth.h"
#include "edge_http.h"
#include "edge_scim.h"
#include "lk_key.h"
#include "lk_log.h"
#include "lk_util.h"

typedef struct {
    const char *path;      /* exact path, or the part before the id */
    const char *id_prefix; /* NULL: exact path; else path + id + suffix, the id starting so */
    const char *suffix;    /* after the id: "", "/rotate" or "/revoke" */
    const char *method;
    const char *op;
    edge_svc_t svc;
    int created;       /* answer 201 on success */
    int secret_answer; /* the answer shows a secret once */
    const char *role;  /* required role */
} route_t;

static const route_t ROUTES[] = {
    {"/admin/v1/providers", NULL, NULL, "POST", "providers.create", EDGE_SVC_VAULT, 1, 0, "admin"},
    {"/admin/v1/providers", NULL, NULL, "GET", "providers.list", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/providers/", "prov_", "", "GET", "providers.get", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/providers/", "prov_", "/credential", "PUT", "providers.replace_credential", EDGE_SVC_VAULT, 0,
     0, "admin"},
    {"/admin/v1/keys", NULL, NULL, "POST", "keys.create", EDGE_SVC_VAULT, 1, 1, "admin"},
    {"/admin/v1/keys", NULL, NULL, "GET", "keys.list", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/keys/", "key_", "", "GET", "keys.get", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/keys/", "key_", "", "PATCH", "keys.update", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/keys/", "key_", "/rotate", "POST", "keys.rotate", EDGE_SVC_VAULT, 1, 1, "admin"},
    {"/admin/v1/keys/", "key_", "/revoke", "POST", "keys.revoke", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/routes", NULL, NULL, "POST", "routes.create", EDGE_SVC_VAULT, 1, 0, "admin"},
    {"/admin/v1/routes", NULL, NULL, "GET", "routes.list", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/routes/", "rt_", "", "DELETE", "routes.delete", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/tokens", NULL, NULL, "POST", "tokens.create", EDGE_SVC_VAULT, 1, 1, "admin"},
    {"/admin/v1/tokens", NULL, NULL, "GET", "tokens.list", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/tokens/", "adm_", "/revoke", "POST", "tokens.revoke", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/policies", NULL, NULL, "POST", "policies.create", EDGE_SVC_POLICY, 1, 0, "admin"},
    {"/admin/v1/policies", NULL, NULL, "GET", "policies.list", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/policies/validate", NULL, NULL, "POST", "policies.validate", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/policies/test", NULL, NULL, "POST", "policies.test", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/policies/default", NULL, NULL, "PUT", "policies.set_default", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/policies/", "pol_", "", "GET", "policies.get", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/policies/", "pol_", "", "PUT", "policies.update", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/policies/", "pol_", "/versions", "GET", "policies.versions", EDGE_SVC_POLICY, 0, 0, "admin"},
    {"/admin/v1/hdp/issuers", NULL, NULL, "POST", "hdp.issuers.create", EDGE_SVC_POLICY, 1, 0, "admin"},
    {"/admin/v1/hdp/issuers", NULL, NULL, "GET", "hdp.issuers.list", EDGE_SVC_POLICY, 0, 0, "auditor"},
    {"/admin/v1/hdp/issuers/", "hdpi_", "/revoke", "POST", "hdp.issuers.revoke", EDGE_SVC_POLICY, 0, 0,
     "admin"},
    {"/admin/v1/audit/events", NULL, NULL, "GET", "audit.query", EDGE_SVC_AUDIT, 0, 0, "auditor"},
    {"/admin/v1/audit/verify", NULL, NULL, "POST", "audit.verify", EDGE_SVC_AUDIT, 0, 0, "auditor"},
    {"/admin/v1/audit/status", NULL, NULL, "GET", "audit.status", EDGE_SVC_AUDIT, 0, 0, "auditor"},
    {"/admin/v1/audit/settings", NULL, NULL, "GET", "audit.settings.get", EDGE_SVC_AUDIT, 0, 0, "auditor"},
    {"/admin/v1/audit/settings", NULL, NULL, "PATCH", "audit.settings.update", EDGE_SVC_AUDIT, 0, 0, "admin"},
    {"/admin/v1/audit/checkpoint", NULL, NULL, "POST", "audit.checkpoint", EDGE_SVC_AUDIT, 0, 0, "admin"},
    {"/admin/v1/audit/retention", NULL, NULL, "POST", "audit.retention", EDGE_SVC_AUDIT, 0, 0, "admin"},
    {"/admin/v1/audit/export", NULL, NULL, "GET", "audit.export", EDGE_SVC_AUDIT, 0, 0, "auditor"},
    {"/admin/v1/holds", NULL, NULL, "GET", "holds.list", EDGE_SVC_APPROVAL, 0, 0, "approver"},
    {"/admin/v1/holds/", "hold_", "", "GET", "holds.get", EDGE_SVC_APPROVAL, 0, 0, "approver"},
    {"/admin/v1/holds/", "hold_", "/approve", "POST", "holds.approve", EDGE_SVC_APPROVAL, 0, 0, "approver"},
    {"/admin/v1/holds/", "hold_", "/reject", "POST", "holds.reject", EDGE_SVC_APPROVAL, 0, 0, "approver"},
    {"/admin/v1/sso/status", NULL, NULL, "GET", "sso.status", EDGE_SVC_VAULT, 0, 0, "admin"},
    {"/admin/v1/sso/users", NULL, NULL, "GET", "sso.users", EDGE_SVC_VAULT, 0, 0, "admin"},
    /* SCIM 2.0 (issue 11): role scim only, Bearer only, answers and errors in SCIM's shape (edge_scim) */
    {"/scim/v2/Users", NULL, NULL, "POST", "scim.users.create", EDGE_SVC_VAULT, 1, 0, "scim"},
    {"/scim/v2/Users", NULL, NULL, "GET", "scim.users.list", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Users/", "usr_", "", "GET", "scim.users.get", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Users/", "usr_", "", "PUT", "scim.users.replace", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Users/", "usr_", "", "PATCH", "scim.users.patch", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Users/", "usr_", "", "DELETE", "scim.users.delete", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Groups", NULL, NULL, "POST", "scim.groups.create", EDGE_SVC_VAULT, 1, 0, "scim"},
    {"/scim/v2/Groups", NULL, NULL, "GET", "scim.groups.list", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Groups/", "grp_", "", "GET", "scim.groups.get", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Groups/", "grp_", "", "PUT", "scim.groups.replace", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Groups/", "grp_", "", "PATCH", "scim.groups.patch", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Groups/", "grp_", "", "DELETE", "scim.groups.delete", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/ServiceProviderConfig", NULL, NULL, "GET", "scim.discovery", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/ResourceTypes", NULL, NULL, "GET", "scim.discovery", EDGE_SVC_VAULT, 0, 0, "scim"},
    {"/scim/v2/Schemas", NULL, NULL, "GET", "scim.discovery", EDGE_SVC_VAULT, 0, 0, "scim"},
};

static int is_scim(const route_t *r)
{
    return r && strcmp(r->role, "scim") == 0;
}

#define ADMIN_ID_MAX 64 /* prefix + alphanumerics */

/* Does path match route r? Copies the id (NUL-terminated) into id. A
 * malformed id matches nothing (404 before any call). */
static int route_match(const route_t *r, const char *path, size_t len, char id[ADMIN_ID_MAX + 1])
{
    size_t pl = strlen(r->path);
    id[0] = '\0';
    if (!r->id_prefix) return h2o_memis(path, len, r->path, pl);
    if (len <= pl || memcmp(path, r->path, pl) != 0) return 0;
    const char *seg = path + pl, *end = memchr(seg, '/', len - pl);
    size_t n = end ? (size_t)(end - seg) : len - pl, xl = strlen(r->id_prefix);
    if (n <= xl || n > ADMIN_ID_MAX || memcmp(seg, r->id_prefix, xl) != 0) return 0;
    for (size_t i = xl; i < n; i++)
        if (!((seg[i] >= '0' && seg[i] <= '9') || (seg[i] >= 'a' && seg[i] <= 'z') ||
              (seg[i] >= 'A' && seg[i] <= 'Z')))
            return 0;
    if (!h2o_memis(seg + n, len - pl - n, r->suffix, strlen(r->suffix))) return 0;
    memcpy(id, seg, n);
    id[n] = '\0';
    return 1;
}

typedef struct {
    h2o_req_t *req;
    const route_t *route;
    char rid[LK_RID_LEN + 1];
    char object_id[ADMIN_ID_MAX + 1];
    char source_ip[64];
    char tenant[128];             /* of the acting token, once authenticated */
    char actor[ADMIN_ID_MAX + 1]; /* the acting admin token's id (or SSO user id), once authenticated */
    char user[257];               /* the acting SSO user's userName ("" for an admin token) */
    int session;                  /* authenticated by the lk_session cookie (CSRF-checked) */
    int scim;                     /* a /scim/v2 route: SCIM-shaped answers */
    int64_t policy_version;       /* policies.create / update: the version made (recorded as pver) */
    edge_call_t *call;
} admin_t;

/* ---------------------------------------------------------------- audit -- */

/* Copies the string value of "field" from compact JSON (as the workers write
 * it) into out when it is a plain id/code ([A-Za-z0-9_.-]); else out = "".
 * A narrow scan, so an answer holding a secret is never parsed or copied. */
static void json_scan_id(const char *body, size_t len, const char *field, char *out, size_t cap)
{
    char pat[32];
    int pl = snprintf(pat, sizeof pat, "\"%s\":\"", field);
    out[0] = '\0';
    const char *p = pl > 0 ? memmem(body, len, pat, (size_t)pl) : NULL;
    if (!p) return;
    p += pl;
    size_t n = 0;
    while (p + n < body + len && n + 1 < cap &&
           ((p[n] >= '0' && p[n] <= '9') || (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
            p[n] == '_' || p[n] == '.' || p[n] == '-'))
        n++;
    if (p + n >= body + len || p[n] != '"') return; /* not a plain value: nothing recorded */
    memcpy(out, p, n);
    out[n] = '\0';
}

/* One "admin.<op>" event for the request's outcome; fire and forget. */
static void admin_audit(admin_t *a, int status, const char *code, const char *object_id)
{
    const char *op = a->route ? a->route->op : "unknown";
    char kind[64], event_id[LK_UUID_LEN + 1];
    snprintf(kind, sizeof kind, "admin.%s", op);
    lk_uuid_derive(event_id, a->rid, kind);
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_AUDIT;
    m.env.rid = lk_str(a->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    lk_audit_t *ev = &m.u.audit;
    ev->event_id = lk_str(event_id);
    ev->kind = lk_str(kind);
    ev->time_ms = lk_now_ms();
    ev->tenant = lk_str(a->tenant);
    ev->key_id = lk_str(a->actor); /* adm_... (via token) or usr_... (via session) */
    ev->user = lk_str(a->user);
    ev->source_ip = lk_str(a->source_ip);
    ev->endpoint = lk_str(op);
    ev->decision = lk_str(status < 400 ? "allow" : "deny");
    ev->rule_id = lk_str(object_id && object_id[0] ? object_id : a->object_id); /* the object acted on */
    if (a->policy_version > 0) {
        ev->policy_id = ev->rule_id;
        ev->policy_version = a->policy_version;
    }
    ev->http_status = status;
    ev->prompt_tokens = ev->completion_tokens = ev->total_tokens = -1;
    ev->error_code = lk_str(status < 400 ? "" : (code ? code : "error"));
    /* reads of the audit trail itself (query pages, tail polls, status) are not recorded: they would flood it
     */
    if (a->route && a->route->svc == EDGE_SVC_AUDIT && strcmp(a->route->method, "GET") == 0 && status < 400)
        return;
    edge_audit_send_reliable(&m); /* until acknowledged */
}

/* Audits, then answers with an error. */
static void admin_error(admin_t *a, int status, const char *code, const char *message)
{
    admin_audit(a, status, code, NULL);
    if (a->scim)
        edge_scim_send_error(a->req, status, a->rid, NULL, message);
    else
        edge_http_send_error(a->req, status, a->rid, NULL, code, message);
}

void edge_admin_audit_event(const char *rid, const char *op, const char *tenant, const char *actor,
                            const char *user, const char *source_ip, int status, const char *code)
{
    static const route_t sso[] = {
        {"/auth/", NULL, NULL, "GET", "sso.login", EDGE_SVC_VAULT, 0, 0, "admin"},
        {"/auth/", NULL, NULL, "POST", "sso.logout", EDGE_SVC_VAULT, 0, 0, "admin"}};
    admin_t a;
    memset(&a, 0, sizeof a);
    a.route = strcmp(op, "sso.logout") == 0 ? &sso[1] : &sso[0];
    snprintf(a.rid, sizeof a.rid, "%s", rid);
    snprintf(a.tenant, sizeof a.tenant, "%s", tenant ? tenant : "");
    snprintf(a.actor, sizeof a.actor, "%s", actor ? actor : "");
    snprintf(a.user, sizeof a.user, "%s", user ? user : "");
    snprintf(a.source_ip, sizeof a.source_ip, "%s", source_ip ? source_ip : "");
    admin_audit(&a, status, code, NULL);
}

static void on_admin_dispose(void *p)
{
    admin_t *a = p;
    edge_rpc_cancel(g_edge->rpc, a->call);
}

static void wipe_entity(h2o_req_t *req)
{
    if (req->entity.base && req->entity.len) sodium_memzero((void *)req->entity.base, req->entity.len);
}

static void on_admin_rep(void *data, const lk_msg_t *reply)
{
    admin_t *a = data;
    a->call = NULL;
    if (!reply) {
        admin_error(a, 503, "service_unavailable",
                    "The service that owns this operation is unavailable; please retry.");
        return;
    }
    if (reply->env.type == LK_MSG_ERROR) {
        char msg[512];
        lk_str_copy(msg, sizeof msg, reply->u.error.message);
        int st = edge_http_status_of(reply->u.error.status);
        admin_audit(a, st, "service_error", NULL);
        if (a->scim)
            edge_scim_send_error(a->req, st, a->rid, NULL, msg[0] ? msg : "The operation failed.");
        else
            edge_http_send_error(a->req, st, a->rid, NULL, NULL, msg[0] ? msg : "The operation failed.");
        return;
    }
    if (reply->env.type != LK_MSG_ADMIN_REP) {
        admin_error(a, 500, "internal_error", "Unexpected answer.");
        return;
    }
    const lk_admin_rep_t *r = &reply->u.admin_rep;
    int status = edge_http_status_of(r->status);
    if (status == 200 && a->route->created) status = 201;
    const char *body = r->json.len ? r->json.ptr : "{}";
    size_t len = r->json.len ? r->json.len : 2;
    char code[64] = "", created[ADMIN_ID_MAX + 1] = "";
    if (status >= 400) json_scan_id(body, len, "code", code, sizeof code);
    if (status < 400 && !a->object_id[0] && a->route->created)
        json_scan_id(body, len, "id", created, sizeof created);
    if (status < 400 &&
        (!strcmp(a->route->op, "policies.create") || !strcmp(a->route->op, "policies.update"))) {
        /* a policy change: the event names the version made (who = the actor; what = its stored diff) */
        const char *v = memmem(body, len, "\"version\":", 10);
        if (v) a->policy_version = strtoll(v + 10, NULL, 10);
    }
    if (a->scim && status >= 400) json_scan_id(body, len, "scimType", code, sizeof code);
    admin_audit(a, status, code, created);
    if (a->scim) {
        if (status == 200 && strstr(a->route->op, ".delete")) status = 204;
        edge_scim_send(a->req, status, a->rid, body, len);
        return;
    }
    if (status == 200 && strcmp(a->route->op, "sso.status") == 0) { /* plus the edge's own OIDC settings */
        json_t *j = json_loadb(body, len, 0, NULL);
        if (json_is_object(j)) {
            json_object_set_new(j, "oidc", edge_auth_status());
            char *txt = json_dumps(j, JSON_COMPACT);
            if (txt) edge_http_send_json(a->req, status, a->rid, txt, strlen(txt));
            free(txt);
            json_decref(j);
            if (txt) return;
        }
        json_decref(j);
    }
    if (a->route->secret_answer)
        edge_http_send_json_secret(a->req, status, a->rid, body, len);
    else
        edge_http_send_json(a->req, status, a->rid, body, len);
}

static int role_allows(lk_str_t have, const char *need)
{
    return lk_str_eq(have, "admin") || lk_str_eq(have, need);
}

static void on_admin_auth(void *data, const lk_msg_t *reply)
{
    admin_t *a = data;
    a->call = NULL;
    if (!reply) {
        wipe_entity(a->req);
        admin_error(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
        return;
    }
    if (reply->env.type != LK_MSG_ADMIN_AUTH_REP) {
        wipe_entity(a->req);
        int st = reply->env.type == LK_MSG_ERROR ? edge_http_status_of(reply->u.error.status) : 500;
        const char *code =
            st == 401 ? (a->session ? "not_signed_in" : "invalid_admin_token") : "auth_unavailable";
        admin_audit(a, st, code, NULL);
        if (a->scim)
            edge_scim_send_error(a->req, st, a->rid, NULL,
                                 st == 401 ? "The admin token is not valid."
                                           : "The admin token could not be checked.");
        else
            edge_http_send_error(a->req, st, a->rid, NULL, st == 401 ? code : NULL,
                                 st == 401
                                     ? (a->session ? "The session is not valid (expired, signed out or the "
                                                     "user was deactivated): please sign in."
                                                   : "The admin token is not valid.")
                                     : "The admin token could not be checked.");
        return;
    }
    const lk_admin_auth_rep_t *au = &reply->u.admin_auth_rep;
    lk_str_copy(a->tenant, sizeof a->tenant, au->tenant);
    lk_str_copy(a->actor, sizeof a->actor, au->token_id);
    lk_str_copy(a->user, sizeof a->user, au->user_name);
    if (a->session != lk_str_eq(au->via, "session")) { /* a cookie must be a session, a Bearer a token */
        wipe_entity(a->req);
        admin_error(a, 401, "invalid_admin_token", "The admin token is not valid.");
        return;
    }
    if (a->session && edge_auth_unsafe_method(a->req)) {
        h2o_iovec_t csrf;
        const char *why = edge_auth_csrf_precheck(a->req, &csrf);
        if (why || !edge_auth_csrf_equal(csrf, au->csrf)) {
            wipe_entity(a->req);
            admin_error(a, 403, "csrf_failed", why ? why : "The X-CSRF-Token does not match the session's.");
            return;
        }
    }
    if (a->scim ? !lk_str_eq(au->role, "scim") : !role_allows(au->role, a->route->role)) {
        wipe_entity(a->req);
        admin_error(a, 403, "insufficient_role",
                    a->session ? "Your role does not allow this operation."
                               : "This admin token's role does not allow this operation.");
        return;
    }
    if (strcmp(a->route->op, "scim.discovery") == 0) {
        edge_scim_discovery(a->req, a->rid);
        return;
    }
    if (strcmp(a->route->op, "audit.export") == 0) { /* streamed page by page */
        admin_audit(a, 200, NULL, NULL);
        edge_audit_export_start(a->req, a->rid, au->tenant, au->token_id, au->role);
        return;
    }
    lk_msg_t m = {0};
    m.env.type = LK_MSG_ADMIN_REQ;
    m.env.rid = lk_str(a->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.admin_req.op = lk_str(a->route->op);
    m.u.admin_req.tenant = au->tenant;
    m.u.admin_req.actor = au->token_id;
    m.u.admin_req.role = au->role;
    m.u.admin_req.object_id = lk_str(a->object_id);
    m.u.admin_req.json = (lk_str_t){a->req->entity.base, a->req->entity.len};
    if ((a->route->svc == EDGE_SVC_AUDIT || a->scim) && strcmp(a->route->method, "GET") == 0)
        m.u.admin_req.json = edge_audit_query_json(a->req);
    a->call = edge_rpc_call(g_edge->rpc, a->route->svc, &m, on_admin_rep, a);
    wipe_entity(a->req);
    if (!a->call)
        admin_error(a, 503, "service_unavailable",
                    "The service that owns this operation is unavailable; please retry.");
}

edge_call_t *edge_admin_auth_call(const char *rid, h2o_iovec_t token, edge_rpc_cb cb, void *data)
{
    lk_msg_t m = {0};
    m.env.type = LK_MSG_ADMIN_AUTH;
    m.env.rid = lk_str(rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.admin_auth.token = (lk_str_t){token.base, token.len};
    return edge_rpc_call(g_edge->rpc, EDGE_SVC_VAULT, &m, cb, data);
}

int edge_admin_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    admin_t *a = h2o_mem_alloc_shared(&req->pool, sizeof *a, on_admin_dispose);
    memset(a, 0, sizeof *a);
    a->req = req;
    lk_rid_new(a->rid);
    edge_http_peer(req, a->source_ip, sizeof a->source_ip);
    const route_t *route = NULL;
    int path_known = 0;
    char id[ADMIN_ID_MAX + 1];
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++) {
        if (!route_match(&ROUTES[i], req->path_normalized.base, req->path_normalized.len, id)) continue;
        path_known = 1;
        if (h2o_memis(req->method.base, req->method.len, ROUTES[i].method, strlen(ROUTES[i].method))) {
            route = &ROUTES[i];
            memcpy(a->object_id, id, sizeof id);
        }
    }
    if (!route) {
        a->scim =
            h2o_memis(req->path_normalized.base, req->path_normalized.len > 6 ? 6 : req->path_normalized.len,
                      H2O_STRLIT("/scim/"));
        wipe_entity(req);
        admin_error(a, path_known ? 405 : 404, path_known ? "method_not_allowed" : "not_found",
                    path_known ? "This method is not allowed here." : "No such admin endpoint.");
        return 0;
    }
    a->route = route;
    a->scim = is_scim(route);
    const char *framing = edge_http_framing_error(req);
    if (framing) {
        wipe_entity(req);
        admin_error(a, 400, "malformed_request", framing);
        return 0;
    }
    if (req->entity.len > g_edge->cfg.max_body_bytes) {
        wipe_entity(req);
        admin_error(a, 413, "request_too_large", "The request body is too large.");
        return 0;
    }
    h2o_iovec_t tok = edge_http_bearer(req);
    lk_key_info_t info;
    int dup = 0;
    if (!a->scim && !edge_http_header(req, "authorization", &dup).base && !dup &&
        !edge_http_header(req, "x-api-key", &dup).base && !dup) {
        /* no Authorization: the console's session cookie, CSRF-checked for state-changing methods */
        h2o_iovec_t ses = edge_auth_session_cookie(req);
        if (ses.base) {
            h2o_iovec_t csrf;
            const char *why = edge_auth_unsafe_method(req) ? edge_auth_csrf_precheck(req, &csrf) : NULL;
            if (why) {
                wipe_entity(req);
                admin_error(a, 403, "csrf_failed", why);
                return 0;
            }
            tok = ses;
            a->session = 1;
        }
    }
    if (!a->session &&
        (!tok.base || lk_key_parse(tok.base, tok.len, &info) != LK_KEY_OK || info.kind != LK_KEY_ADMIN)) {
        wipe_entity(req);
        admin_error(a, 401, "invalid_admin_token",
                    a->scim ? "An admin token of role scim (Authorization: Bearer lk_adm_...) is required."
                            : "An admin token (Authorization: Bearer lk_adm_...) or a signed-in session is "
                              "required.");
        return 0;
    }
    a->call = edge_admin_auth_call(a->rid, tok, on_admin_auth, a);
    if (!a->call) {
        wipe_entity(req);
        admin_error(a, 503, "service_unavailable", "The vault is unavailable; please retry.");
    }
    return 0;
}

int edge_health_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    char rid[LK_RID_LEN + 1];
    lk_rid_new(rid);
    if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/livez"))) {
        edge_http_send_json(req, 200, rid, H2O_STRLIT("{\"status\":\"ok\"}"));
        return 0;
    }
    /* /readyz and /healthz: every worker answered a ping recently, and we are not stopping */
    int64_t now = lk_now_ms();
    int ready = !g_edge->stopping && !g_edge->draining;
    json_t *svcs = json_object();
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        int64_t last = edge_rpc_last_pong_ms(g_edge->rpc, (edge_svc_t)i);
        int up = last > 0 && now - last < 3000;
        ready &= up;
        json_object_set_new(svcs, edge_svc_name((edge_svc_t)i), json_string(up ? "up" : "down"));
    }
    json_t *body =
        json_pack("{s:s,s:o}", "status",
                  g_edge->stopping || g_edge->draining ? "stopping" : (ready ? "ready" : "not ready"),
                  "services", svcs);
    char *s = json_dumps(body, JSON_COMPACT);
    edge_http_send_json(req, ready ? 200 : 503, rid, s, strlen(s));
    free(s);
    json_decref(body);
    return 0;
}

int edge_notfound_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    char rid[LK_RID_LEN + 1], msg[300];
    lk_rid_new(rid);
    snprintf(msg, sizeof msg, "Unknown request URL: %.*s %.*s.", (int)req->method.len, req->method.base,
             (int)(req->path_normalized.len > 200 ? 200 : req->path_normalized.len),
             req->path_normalized.base);
    edge_http_send_error(req, 404, rid, NULL, "unknown_url", msg);
    return 0;
}
