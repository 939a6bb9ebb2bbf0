/*  approval - holds in PostgreSQL: HOLD (open or join), HOLD_WAIT (poll),
 *  decisions taken once, and the tick that times out and abandons holds.
 *  See approval.h and proto/approval.md.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "approval.h"
#include "approval_notify.h"
#include "lk_log.h"
#include "lk_util.h"
#include "lk_worker.h"

#define HOLD_COLS                                                                                            \
    "id, status, (extract(epoch FROM expires_at) * 1000)::bigint, decided_by, decision_reason, "             \
    "expires_at > now()"

/* A pending hold already past its expiry counts as timed out, even before the tick marks it. */
static const char SQL_EXPIRE_SAME[] =
    "UPDATE holds SET status = 'timed_out', decided_at = now() WHERE tenant_id = $1::text AND key_id = "
    "$2::text "
    "AND digest = $3::bytea AND policy_id = $4::text AND policy_version = $5::bigint AND kind = $6::text "
    "AND status = 'pending' AND expires_at <= now()";

static const char SQL_OPEN[] =
    "INSERT INTO holds (id, tenant_id, key_id, digest, policy_id, policy_version, kind, rule_id, reason, "
    "requester, agent, model, tool, excerpt, expires_at) VALUES ($1::text, $2::text, $3::text, $4::bytea, "
    "$5::text, $6::bigint, $7::text, $8::text, $9::text, $10::text, $11::text, $12::text, $13::text, "
    "$14::text, "
    "now() + $15::bigint * interval '1 millisecond') "
    "ON CONFLICT (tenant_id, key_id, digest, policy_id, policy_version, kind) WHERE status = 'pending' "
    "DO UPDATE SET last_poll_at = now() RETURNING " HOLD_COLS;

static const char SQL_WAIT[] =
    "UPDATE holds SET last_poll_at = now(), "
    "decided_at = CASE WHEN status = 'pending' AND expires_at <= now() THEN now() ELSE decided_at END, "
    "status = CASE WHEN status = 'pending' AND expires_at <= now() THEN 'timed_out' ELSE status END "
    "WHERE id = $1::text AND tenant_id = $2::text RETURNING " HOLD_COLS;

static const char SQL_DECIDE_CHECK[] =
    "SELECT requester FROM holds WHERE id = $1::text AND tenant_id = $2::text";

static const char SQL_DECIDE[] =
    "UPDATE holds SET status = $3::text, decided_at = now(), decided_by = $4::text, decision_reason = "
    "$5::text "
    "WHERE id = $1::text AND tenant_id = $2::text AND status = 'pending' AND expires_at > now() RETURNING id";

static const char SQL_TICK_TIMEOUT[] = "UPDATE holds SET status = 'timed_out', decided_at = now() WHERE "
                                       "status = 'pending' AND expires_at <= now()";

static const char SQL_TICK_ABANDON[] =
    "UPDATE holds SET status = 'abandoned', decided_at = now() WHERE status = 'pending' "
    "AND last_poll_at < now() - $1::bigint * interval '1 millisecond'";

approval_t *approval_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms,
                         const approval_opts_t *opts)
{
    approval_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->opts = *opts;
    self->db = lk_db_new(conninfo, "lumkey-approval", statement_timeout_ms);
    if (!self->db || lk_db_prepare(self->db, "expire_same", SQL_EXPIRE_SAME) != 0 ||
        lk_db_prepare(self->db, "open", SQL_OPEN) != 0 || lk_db_prepare(self->db, "wait", SQL_WAIT) != 0 ||
        lk_db_prepare(self->db, "decide_check", SQL_DECIDE_CHECK) != 0 ||
        lk_db_prepare(self->db, "decide", SQL_DECIDE) != 0 ||
        lk_db_prepare(self->db, "tick_timeout", SQL_TICK_TIMEOUT) != 0 ||
        lk_db_prepare(self->db, "tick_abandon", SQL_TICK_ABANDON) != 0 ||
        approval_admin_prepare(self->db) != 0) {
        approval_destroy(&self);
        return NULL;
    }
    if (lk_db_connect(self->db, db_wait_ms) != 0)
        lk_log_warn("database not reachable yet: holds answer UNAVAILABLE until it is");
    self->notify = approval_notify_start(conninfo, statement_timeout_ms);
    if (!self->notify) approval_destroy(&self);
    return self;
}

void approval_destroy(approval_t **self_p)
{
    if (!self_p || !*self_p) return;
    approval_notify_stop(&(*self_p)->notify);
    lk_db_destroy(&(*self_p)->db);
    free(*self_p);
    *self_p = NULL;
}

/* "hold_" + 24 hex characters (96 random bits). */
static void hold_id_new(char out[32])
{
    uint8_t r[12];
    randombytes_buf(r, sizeof r);
    memcpy(out, "hold_", 5);
    lk_hex(out + 5, r, sizeof r);
}

static lk_hold_outcome_t outcome_of(lk_str_t status)
{
    if (lk_str_eq(status, "approved")) return LK_HOLD_APPROVED;
    if (lk_str_eq(status, "rejected")) return LK_HOLD_REJECTED;
    if (lk_str_eq(status, "pending")) return LK_HOLD_PENDING;
    return LK_HOLD_TIMED_OUT; /* timed_out, abandoned: deny */
}

/* Fills a HOLD_REP / HOLD_WAIT_REP from one HOLD_COLS row, strings copied into scratch. */
static int reply_row(PGresult *res, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_hold_rep_t *h = &rep->u.hold_rep;
    lk_str_t status = lk_db_str(res, 0, 1);
    h->outcome = outcome_of(status);
    /* pending but past its expiry (the statement saw it just before): deny */
    if (h->outcome == LK_HOLD_PENDING && !lk_db_bool(res, 0, 5)) h->outcome = LK_HOLD_TIMED_OUT;
    h->hold_id = lk_db_str(res, 0, 0);
    h->expires_ms = lk_db_i64(res, 0, 2);
    h->approver = lk_db_str(res, 0, 3);
    h->reason = lk_db_str(res, 0, 4);
    lk_str_t *const keep[] = {&h->hold_id, &h->approver, &h->reason};
    return lk_worker_keep(scratch, keep, 3);
}

static int handle_hold(approval_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_hold_t *q = &req->u.hold;
    lk_str_t kind = lk_str_empty(q->kind) ? LK_STR_LIT("request") : q->kind;
    if (!lk_str_eq(kind, "request") && !lk_str_eq(kind, "answer"))
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "kind must be request or answer");
    if (q->timeout_ms < 0) return lk_worker_error(rep, LK_ST_BAD_REQUEST, "tmo must not be negative");
    int64_t tmo = q->timeout_ms ? q->timeout_ms : self->opts.default_timeout_ms;
    if (tmo > self->opts.max_timeout_ms) tmo = self->opts.max_timeout_ms;
    char excerpt[APPROVAL_EXCERPT_MAX + 1], id[32] = {0};
    approval_redact(excerpt, sizeof excerpt, q->excerpt);
    hold_id_new(id);

    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_str(&p, q->key_id);
    lk_db_param_bytes(&p, q->digest, sizeof q->digest);
    lk_db_param_str(&p, q->policy_id);
    lk_db_param_i64(&p, q->policy_version);
    lk_db_param_str(&p, kind);
    lk_db_rc_t rc = lk_db_exec(self->db, "expire_same", &p, NULL);
    PGresult *res = NULL;
    if (rc == LK_DB_OK) {
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, id);
        lk_db_param_str(&p, q->tenant);
        lk_db_param_str(&p, q->key_id);
        lk_db_param_bytes(&p, q->digest, sizeof q->digest);
        lk_db_param_str(&p, q->policy_id);
        lk_db_param_i64(&p, q->policy_version);
        lk_db_param_str(&p, kind);
        lk_db_param_str(&p, q->rule_id);
        lk_db_param_str(&p, q->reason);
        lk_db_param_str(&p, q->user);
        lk_db_param_str(&p, q->agent);
        lk_db_param_str(&p, q->model);
        lk_db_param_str(&p, q->tool);
        lk_db_param_cstr(&p, excerpt);
        lk_db_param_i64(&p, tmo);
        rc = lk_db_exec(self->db, "open", &p, &res);
    }
    if (rc == LK_DB_ERROR && strcmp(lk_db_sqlstate(self->db), "23503") == 0)
        return lk_worker_error(rep, LK_ST_NOT_FOUND, "unknown tenant");
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int out = PQntuples(res) == 1 ? reply_row(res, rep, scratch) : -1;
    if (out == 0)
        lk_log(LK_LOG_INFO, NULL, "hold %.*s %s", (int)rep->u.hold_rep.hold_id.len,
               rep->u.hold_rep.hold_id.ptr, lk_str_eq(rep->u.hold_rep.hold_id, id) ? "opened" : "joined");
    PQclear(res);
    return out;
}

static int handle_wait(approval_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, req->u.hold_wait.hold_id);
    lk_db_param_str(&p, req->u.hold_wait.tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "wait", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int out = PQntuples(res) == 1 ? reply_row(res, rep, scratch)
                                  : lk_worker_error(rep, LK_ST_NOT_FOUND, "no such hold");
    PQclear(res);
    return out;
}

lk_db_rc_t approval_decide(approval_t *self, lk_str_t tenant, lk_str_t id, int approve, lk_str_t approver,
                           const char *const *approver_names, lk_str_t reason, approval_decide_rc_t *out)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, id);
    lk_db_param_str(&p, tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "decide_check", &p, &res);
    if (rc != LK_DB_OK) return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        *out = APPROVAL_DECIDE_NOT_FOUND;
        return LK_DB_OK;
    }
    lk_str_t requester = lk_db_str(res, 0, 0);
    int self_approval = 0;
    if (!lk_str_empty(requester)) {
        self_approval =
            requester.len == approver.len && memcmp(requester.ptr, approver.ptr, approver.len) == 0;
        for (size_t i = 0; approver_names && approver_names[i] && !self_approval; i++)
            self_approval = approver_names[i][0] && lk_str_eq(requester, approver_names[i]);
    }
    PQclear(res);
    if (self_approval) {
        *out = APPROVAL_DECIDE_SELF;
        return LK_DB_OK;
    }
    lk_db_params_init(&p);
    lk_db_param_str(&p, id);
    lk_db_param_str(&p, tenant);
    lk_db_param_cstr(&p, approve ? "approved" : "rejected");
    lk_db_param_str(&p, approver);
    lk_db_param_str(&p, reason);
    rc = lk_db_exec(self->db, "decide", &p, &res);
    if (rc != LK_DB_OK) return rc;
    *out = PQntuples(res) == 1 ? APPROVAL_DECIDE_OK : APPROVAL_DECIDE_ALREADY;
    PQclear(res);
    if (*out == APPROVAL_DECIDE_OK)
        lk_log_info("hold %.*s %s by %.*s", (int)id.len, id.ptr, approve ? "approved" : "rejected",
                    (int)approver.len, approver.ptr);
    return LK_DB_OK;
}

void approval_tick(void *ctx)
{
    approval_t *self = ctx;
    PGresult *res = NULL;
    if (lk_db_exec(self->db, "tick_timeout", NULL, &res) == LK_DB_OK) {
        const char *n = PQcmdTuples(res);
        if (n && atoi(n) > 0) lk_log_info("%s hold(s) timed out", n);
        PQclear(res);
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_i64(&p, self->opts.abandon_ms);
    res = NULL;
    if (lk_db_exec(self->db, "tick_abandon", &p, &res) == LK_DB_OK) {
        const char *n = PQcmdTuples(res);
        if (n && atoi(n) > 0) lk_log_info("%s hold(s) abandoned: their waiter stopped polling", n);
        PQclear(res);
    }
}

int approval_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    approval_t *self = ctx;
    switch (req->env.type) {
    case LK_MSG_HOLD:
        return handle_hold(self, req, rep, scratch);
    case LK_MSG_HOLD_WAIT:
        return handle_wait(self, req, rep, scratch);
    case LK_MSG_ADMIN_REQ:
        return approval_admin_handle(self, &req->u.admin_req, rep, scratch);
    default:
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "approval does not handle this message type");
    }
}
