/*  approval_admin - the holds.* admin operations (ADMIN_REQ routed here by
 *  the edge):
 *
 *      holds.list    [json {"status": "pending"|...}]   admin, approver, auditor
 *      holds.get     obj = hold id                      admin, approver, auditor
 *      holds.approve obj = hold id, json {"reason"}     admin, approver
 *      holds.reject  obj = hold id, json {"reason"}     admin, approver
 *      holds.decide  json {"hold", "action": "approve"|"reject", "approver",
 *                    "approver_name", "reason"}         role "edge" only: the
 *                    edge's Slack endpoint, after it verified Slack's
 *                    signature (no admin token has that role)
 *      holds.redeem_link json {"token"}                role "edge" only: a
 *                    one-time approve / reject link; the worker checks its
 *                    MAC and expiry (it holds the link key); approver "link"
 *
 *  A decision is taken once (409 already_decided after), never by the
 *  requester (403 self_approval), and records who decided. Answers are JSON
 *  built by PostgreSQL (json_build_object) from the row.
 */
#include <jansson.h>
#include <string.h>

#include "approval.h"
#include "approval_notify.h"
#include "lk_worker.h"

#define HOLD_JSON                                                                                            \
    "json_build_object('id', id, 'status', status, 'kind', kind, 'key_id', key_id, 'user', requester, "      \
    "'agent', agent, 'model', model, 'policy_id', policy_id, 'policy_version', policy_version, "             \
    "'rule_id', rule_id, 'reason', reason, 'tool', tool, 'excerpt', excerpt, 'digest', encode(digest, "      \
    "'hex'), 'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "       \
    "'expires_at', to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "               \
    "'decided_at', to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "               \
    "'decided_by', decided_by, 'decision_reason', decision_reason)"

int approval_admin_prepare(lk_db_t *db)
{
    if (lk_db_prepare(db, "admin_get",
                      "SELECT " HOLD_JSON "::text FROM holds WHERE id = $1::text AND "
                      "tenant_id = $2::text") != 0)
        return -1;
    if (lk_db_prepare(db, "admin_list",
                      "SELECT json_build_object('data', coalesce(json_agg(h.j ORDER BY h.created_at DESC), "
                      "'[]'::json))::text FROM (SELECT " HOLD_JSON " AS j, created_at FROM holds "
                      "WHERE tenant_id = $1::text AND ($2::text = '' OR status = $2::text) "
                      "ORDER BY created_at DESC LIMIT 500) h") != 0)
        return -1;
    return lk_db_prepare(db, "admin_token_name", "SELECT name FROM admin_tokens WHERE id = $1::text") |
           /* an SSO user (issue 11) decides as its userName */
           lk_db_prepare(db, "sso_user_name", "SELECT user_name FROM scim_users WHERE id = $1::text");
}

static int reply_text(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *text, size_t n)
{
    lk_buf_reset(scratch);
    if (lk_buf_append(scratch, text, n) != 0) return -1;
    rep->u.admin_rep.status = st;
    rep->u.admin_rep.json = (lk_str_t){(const char *)scratch->data, n};
    return 0;
}

static int reply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code, const char *msg)
{
    json_t *b =
        json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type",
                  st == LK_ST_INTERNAL || st == LK_ST_UNAVAILABLE ? "api_error" : "invalid_request_error",
                  "code", code);
    if (!b) return -1;
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    if (!text) return -1;
    int rc = reply_text(rep, scratch, st, text, strlen(text));
    free(text);
    return rc;
}

/* The hold's JSON (404 if none). */
static int reply_hold(approval_t *self, lk_str_t tenant, lk_str_t id, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, id);
    lk_db_param_str(&p, tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "admin_get", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int out;
    if (PQntuples(res) != 1) {
        out = reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No such hold.");
    } else {
        lk_str_t j = lk_db_str(res, 0, 0);
        out = reply_text(rep, scratch, LK_ST_OK, j.ptr, j.len);
    }
    PQclear(res);
    return out;
}

static int role_in(lk_str_t role, int allow_auditor)
{
    return lk_str_eq(role, "admin") || lk_str_eq(role, "approver") ||
           (allow_auditor && lk_str_eq(role, "auditor"));
}

static const char *jget(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int decide(approval_t *self, const lk_admin_req_t *q, lk_str_t id, int approve, lk_str_t approver,
                  const char *approver_name, const char *reason, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (strlen(reason) > 500)
        return reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_value",
                         "reason is longer than 500 bytes.");
    char token_name[128] = "";
    int sso_user = approver.len > 4 && memcmp(approver.ptr, "usr_", 4) == 0;
    if ((!approver_name || !*approver_name) && approver.len > 4 &&
        (memcmp(approver.ptr, "adm_", 4) == 0 || sso_user)) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_str(&p, approver);
        PGresult *res = NULL;
        if (lk_db_exec(self->db, sso_user ? "sso_user_name" : "admin_token_name", &p, &res) == LK_DB_OK) {
            if (PQntuples(res) == 1) lk_str_copy(token_name, sizeof token_name, lk_db_str(res, 0, 0));
            PQclear(res);
        }
        approver_name = token_name;
    }
    const char *names[] = {approver_name, NULL};
    approval_decide_rc_t out;
    lk_db_rc_t rc = approval_decide(self, q->tenant, id, approve, approver, names, lk_str(reason), &out);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    switch (out) {
    case APPROVAL_DECIDE_NOT_FOUND:
        return reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No such hold.");
    case APPROVAL_DECIDE_SELF:
        return reply_err(rep, scratch, LK_ST_FORBIDDEN, "self_approval",
                         "The requester of a held request cannot decide it.");
    case APPROVAL_DECIDE_ALREADY:
        return reply_err(rep, scratch, LK_ST_CONFLICT, "already_decided",
                         "This hold was already decided, timed out or abandoned; nothing changed.");
    case APPROVAL_DECIDE_OK:
        break;
    }
    return reply_hold(self, q->tenant, id, rep, scratch);
}

int approval_admin_handle(approval_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    int is_edge = lk_str_eq(q->role, "edge");
    int is_decide = lk_str_eq(q->op, "holds.decide") || lk_str_eq(q->op, "holds.redeem_link");
    int is_write = lk_str_eq(q->op, "holds.approve") || lk_str_eq(q->op, "holds.reject");
    if (is_decide ? !is_edge : !role_in(q->role, !is_write))
        return reply_err(rep, scratch, LK_ST_FORBIDDEN, "forbidden", "Your role cannot do this.");
    json_t *body = NULL;
    if (!lk_str_empty(q->json)) {
        body = json_loadb(q->json.ptr, q->json.len, 0, NULL);
        if (!json_is_object(body)) {
            json_decref(body);
            return reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_json",
                             "The body is not a JSON object.");
        }
    }
    int rc;
    if (lk_str_eq(q->op, "holds.list")) {
        const char *st = jget(body, "status");
        if (*st && strcmp(st, "pending") && strcmp(st, "approved") && strcmp(st, "rejected") &&
            strcmp(st, "timed_out") && strcmp(st, "abandoned")) {
            rc = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_value", "Unknown status.");
        } else {
            lk_db_params_t p;
            lk_db_params_init(&p);
            lk_db_param_str(&p, q->tenant);
            lk_db_param_cstr(&p, st);
            PGresult *res = NULL;
            lk_db_rc_t drc = lk_db_exec(self->db, "admin_list", &p, &res);
            if (drc != LK_DB_OK) {
                rc = lk_worker_error(rep, lk_db_status(drc), lk_db_message(drc));
            } else {
                lk_str_t j = lk_db_str(res, 0, 0);
                rc = reply_text(rep, scratch, LK_ST_OK, j.ptr, j.len);
                PQclear(res);
            }
        }
    } else if (lk_str_eq(q->op, "holds.get")) {
        rc = lk_str_empty(q->object_id)
                 ? reply_err(rep, scratch, LK_ST_BAD_REQUEST, "missing_id", "A hold id is needed.")
                 : reply_hold(self, q->tenant, q->object_id, rep, scratch);
    } else if (is_write) {
        rc = lk_str_empty(q->object_id)
                 ? reply_err(rep, scratch, LK_ST_BAD_REQUEST, "missing_id", "A hold id is needed.")
                 : decide(self, q, q->object_id, lk_str_eq(q->op, "holds.approve"), q->actor, NULL,
                          jget(body, "reason"), rep, scratch);
    } else if (lk_str_eq(q->op, "holds.redeem_link")) {
        char hold[64];
        int approve = 0;
        approval_link_rc_t lrc =
            approval_link_verify(self->notify, lk_str(jget(body, "token")), hold, &approve);
        if (lrc == LINK_EXPIRED)
            rc = reply_err(rep, scratch, LK_ST_CONFLICT, "link_expired", "This link has expired.");
        else if (lrc != LINK_OK)
            rc = reply_err(rep, scratch, LK_ST_FORBIDDEN, "bad_link", "This link is not valid.");
        else
            rc = decide(self, q, lk_str(hold), approve, LK_STR_LIT("link"), NULL, "", rep, scratch);
    } else if (is_decide) {
        const char *hold = jget(body, "hold"), *action = jget(body, "action"), *by = jget(body, "approver");
        if (!*hold || !*by || (strcmp(action, "approve") && strcmp(action, "reject")))
            rc = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_value",
                           "holds.decide needs hold, action (approve or reject) and approver.");
        else
            rc = decide(self, q, lk_str(hold), strcmp(action, "approve") == 0, lk_str(by),
                        jget(body, "approver_name"), jget(body, "reason"), rep, scratch);
    } else {
        rc = reply_err(rep, scratch, LK_ST_NOT_FOUND, "unknown_op", "Unknown holds operation.");
    }
    json_decref(body);
    return rc;
}
