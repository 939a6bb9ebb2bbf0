/*  audit - record one event durably, once. */
#include "audit.h"

#include <stdlib.h>

#include "lk_log.h"
#include "lk_worker.h"

static const char SQL_INSERT[] =
    "INSERT INTO audit_events (event_id, kind, request_id, time, tenant_id, key_id, user_id, source_ip, "
    "endpoint, "
    "provider_id, model, upstream_model, decision, policy_id, policy_version, rule_id, http_status, "
    "upstream_status, "
    "latency_us, prompt_tokens, completion_tokens, total_tokens, error_code, trace_id, stream, "
    "fallback_provider_id, fallback_upstream_model) VALUES ("
    "$1::text::uuid, $2::text, $3::text, "
    "CASE WHEN $4::bigint > 0 THEN timestamptz 'epoch' + $4::bigint * interval '1 millisecond' ELSE now() "
    "END, "
    "$5::text, $6::text, $7::text, $8::text, $9::text, $10::text, $11::text, $12::text, $13::text, "
    "$14::text, "
    "$15::bigint, $16::text, $17::int, $18::int, $19::bigint, $20::bigint, $21::bigint, $22::bigint, "
    "$23::text, "
    "$24::text, $25::int::boolean, $26::text, $27::text) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING seq";

static const char SQL_SEQ[] = "SELECT seq FROM audit_events WHERE event_id = $1::text::uuid";

audit_t *audit_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms)
{
    audit_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->db = lk_db_new(conninfo, "lumkey-audit", statement_timeout_ms);
    if (!self->db || lk_db_prepare(self->db, "audit_insert", SQL_INSERT) != 0 ||
        lk_db_prepare(self->db, "audit_seq", SQL_SEQ) != 0) {
        audit_destroy(&self);
        return NULL;
    }
    if (lk_db_connect(self->db, db_wait_ms) != 0) lk_log_warn("database not reachable yet; will keep trying");
    return self;
}

void audit_destroy(audit_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_destroy(&(*self_p)->db);
    free(*self_p);
    *self_p = NULL;
}

/* 0 on the wire means "absent" for these: stored as NULL. */
static void param_i64_or_null(lk_db_params_t *p, int64_t v, int present)
{
    if (present)
        lk_db_param_i64(p, v);
    else
        lk_db_param_null(p);
}

int audit_batch_begin(void *ctx)
{
    audit_t *self = ctx;
    return lk_db_begin(self->db) == LK_DB_OK ? 0 : -1;
}

int audit_batch_commit(void *ctx)
{
    audit_t *self = ctx;
    return lk_db_commit(self->db) == LK_DB_OK ? 0 : -1;
}

/* 8-4-4-4-12 hex: checked here so that one bad id cannot abort a whole batch's transaction. */
static int is_uuid(lk_str_t s)
{
    if (s.len != 36) return 0;
    for (size_t i = 0; i < 36; i++) {
        char c = s.ptr[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

static int on_audit(audit_t *self, const lk_msg_t *req, lk_msg_t *rep)
{
    const lk_audit_t *a = &req->u.audit;
    if (!is_uuid(a->event_id)) return lk_worker_error(rep, LK_ST_BAD_REQUEST, "event_id is not a UUID");
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, a->event_id);
    lk_db_param_str(&p, a->kind);
    lk_db_param_str(&p, req->env.rid);
    lk_db_param_i64(&p, a->time_ms);
    lk_db_param_str_or_null(&p, a->tenant);
    lk_db_param_str_or_null(&p, a->key_id);
    lk_db_param_str_or_null(&p, a->user);
    lk_db_param_str_or_null(&p, a->source_ip);
    lk_db_param_str_or_null(&p, a->endpoint);
    lk_db_param_str_or_null(&p, a->provider_id);
    lk_db_param_str_or_null(&p, a->model);
    lk_db_param_str_or_null(&p, a->upstream_model);
    lk_db_param_str_or_null(&p, a->decision);
    lk_db_param_str_or_null(&p, a->policy_id);
    param_i64_or_null(&p, a->policy_version, a->policy_id.len > 0);
    lk_db_param_str_or_null(&p, a->rule_id);
    param_i64_or_null(&p, a->http_status, a->http_status != 0);
    param_i64_or_null(&p, a->upstream_status, a->upstream_status != 0);
    param_i64_or_null(&p, a->latency_us, a->latency_us != 0);
    param_i64_or_null(&p, a->prompt_tokens, a->prompt_tokens >= 0);
    param_i64_or_null(&p, a->completion_tokens, a->completion_tokens >= 0);
    param_i64_or_null(&p, a->total_tokens, a->total_tokens >= 0);
    lk_db_param_str_or_null(&p, a->error_code);
    lk_db_param_str_or_null(&p, a->trace_id);
    lk_db_param_i64(&p, a->stream ? 1 : 0);
    lk_db_param_str_or_null(&p, a->provider_id2); /* fallback (issue 7) */
    lk_db_param_str_or_null(&p, a->upstream_model2);

    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "audit_insert", &p, &res);
    if (rc == LK_DB_OK && PQntuples(res) == 0) {
        /* already recorded (a retry): answer with the original seq */
        PQclear(res);
        res = NULL;
        lk_db_params_init(&p);
        lk_db_param_str(&p, a->event_id);
        rc = lk_db_exec(self->db, "audit_seq", &p, &res);
    }
    if (rc != LK_DB_OK)
        return lk_worker_error(rep, lk_db_status(rc),
                               rc == LK_DB_BAD_INPUT ? "invalid audit event" : "audit event not recorded");
    int ret = 0;
    if (PQntuples(res) != 1) {
        char rid[LK_PROTO_MAX_RID + 1];
        lk_log(LK_LOG_ERROR, lk_str_copy(rid, sizeof rid, req->env.rid),
               "audit event vanished after its insert");
        ret = lk_worker_error(rep, LK_ST_UNAVAILABLE, "audit event not recorded");
    } else {
        rep->u.audit_rep.seq = lk_db_i64(res, 0, 0);
    }
    PQclear(res);
    return ret;
}

int audit_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    (void)scratch;
    if (req->env.type == LK_MSG_AUDIT) return on_audit(ctx, req, rep);
    return lk_worker_error(rep, LK_ST_BAD_REQUEST, "audit does not handle this message type");
}
