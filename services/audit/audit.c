/*  audit - record one event durably, once, chained per tenant. */
#include "audit.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lk_log.h"
#include "lk_util.h"
#include "lk_worker.h"

#define AUDIT_PIPE_MAX 512 /* events in one group commit (lk_worker batches at most 256) */

#define APPEND_ARGS                                                                                          \
    "$1::text::uuid, $2::text, $3::text, $4::bigint, $5::text, $6::text, $7::text, $8::text, $9::text, "     \
    "$10::text, $11::text, $12::text, $13::text, $14::text, $15::bigint, $16::text, $17::int, $18::int, "    \
    "$19::bigint, $20::bigint, $21::bigint, $22::bigint, $23::text, $24::text, $25::int::boolean, "          \
    "$26::text, "                                                                                            \
    "$27::text, $28::bigint, decode($29::text, 'hex'), decode($30::text, 'hex'), $31::text, $32::text"

static const char SQL_APPEND[] = "SELECT o_seq, o_chain_seq, o_fail_open FROM audit_append(" APPEND_ARGS
                                 ", false, $33::text, $34::text, $35::text::jsonb, $36::text::jsonb)";
static const char SQL_APPEND_OUTBOX[] =
    "SELECT o_seq, o_chain_seq, o_fail_open FROM audit_append(" APPEND_ARGS
    ", true, $33::text, $34::text, $35::text::jsonb, $36::text::jsonb)";
static const char SQL_PARTITIONS[] = "SELECT audit_ensure_partitions(now() - interval '1 month', 3)";
static const char SQL_RETENTION[] = "SELECT audit_retention_run()";
static const char SQL_HEADS[] =
    "SELECT c.chain, c.last_seq, c.last_hash FROM audit_chain c WHERE c.last_seq > coalesce("
    "(SELECT max(k.chain_seq) FROM audit_checkpoints k WHERE k.chain = c.chain), 0)";
static const char SQL_CHECKPOINT[] =
    "INSERT INTO audit_checkpoints (chain, chain_seq, row_hash, signed_at_ms, key_id, signature) "
    "VALUES ($1::text, $2::bigint, $3::bytea, $4::bigint, $5::text, $6::bytea) ON CONFLICT DO NOTHING";

audit_t *audit_new(const audit_config_t *cfg)
{
    audit_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->cfg = *cfg;
    if (self->cfg.checkpoint_interval_ms <= 0) self->cfg.checkpoint_interval_ms = 60000;
    if (self->cfg.retention_interval_ms <= 0) self->cfg.retention_interval_ms = 3600000;
    self->sign = audit_sign_open(cfg->signing_key_file, 1);
    self->piped = calloc(AUDIT_PIPE_MAX, sizeof *self->piped);
    if (!self->sign || !self->piped) goto fail;
    self->db = lk_db_new(cfg->conninfo, "lumkey-audit", cfg->statement_timeout_ms);
    /* admin queries (export pages, verify) may take longer than one event */
    self->adb = lk_db_new(cfg->conninfo, "lumkey-audit-admin", cfg->statement_timeout_ms * 12);
    if (!self->db || !self->adb || lk_db_prepare(self->db, "audit_append", SQL_APPEND) != 0 ||
        lk_db_prepare(self->db, "audit_append_outbox", SQL_APPEND_OUTBOX) != 0 ||
        lk_db_prepare(self->adb, "audit_partitions", SQL_PARTITIONS) != 0 ||
        lk_db_prepare(self->adb, "audit_retention", SQL_RETENTION) != 0 ||
        lk_db_prepare(self->adb, "audit_heads", SQL_HEADS) != 0 ||
        lk_db_prepare(self->adb, "audit_checkpoint", SQL_CHECKPOINT) != 0 ||
        audit_admin_prepare(self->adb) != 0)
        goto fail;
    if (lk_db_connect(self->db, cfg->db_wait_ms) != 0)
        lk_log_warn("database not reachable yet; will keep trying");
    if (cfg->kafka_brokers && *cfg->kafka_brokers) {
        self->kafka = audit_kafka_start(cfg->conninfo, cfg->kafka_brokers, cfg->kafka_topic);
        if (!self->kafka) goto fail;
        self->outbox = 1;
    }
    audit_tick(self); /* partitions before the first event */
    return self;
fail:
    audit_destroy(&self);
    return NULL;
}

void audit_destroy(audit_t **self_p)
{
    if (!self_p || !*self_p) return;
    audit_t *self = *self_p;
    if (self->db)
        lk_log_info("audit stopping: %llu events appended, %llu checkpoints signed",
                    (unsigned long long)self->appended, (unsigned long long)self->checkpoints);
    audit_kafka_stop(&self->kafka);
    lk_db_destroy(&self->db);
    lk_db_destroy(&self->adb);
    audit_sign_destroy(&self->sign);
    free(self->piped);
    free(self);
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

/* A group commit pipelines its events (one round trip and one commit for the
 * batch); their sequence numbers reach the replies in audit_batch_reply. */
int audit_batch_begin(void *ctx)
{
    audit_t *self = ctx;
    if (lk_db_pipe_begin(self->db) != LK_DB_OK) return -1;
    self->pipe = 1;
    self->pipe_n = 0;
    return 0;
}

static void on_piped(void *arg, size_t i, const PGresult *res)
{
    audit_t *self = arg;
    if (i >= self->pipe_n || PQntuples(res) != 1 || lk_db_is_null(res, 0, 1)) return;
    self->piped[i].seq = lk_db_i64(res, 0, 1);
    self->piped[i].fail_open = lk_db_bool(res, 0, 2);
    self->piped[i].ok = 1;
}

int audit_batch_commit(void *ctx)
{
    audit_t *self = ctx;
    self->pipe = 0;
    return lk_db_pipe_commit(self->db, on_piped, self) == LK_DB_OK ? 0 : -1;
}

/* The held reply's seq is its slot in the pipeline until here. */
int audit_batch_reply(void *ctx, lk_msg_t *rep)
{
    audit_t *self = ctx;
    int64_t slot = rep->u.audit_rep.seq;
    if (slot < 0 || (size_t)slot >= self->pipe_n || !self->piped[slot].ok) {
        lk_log(LK_LOG_ERROR, NULL, "audit event was not appended");
        return -1;
    }
    rep->u.audit_rep.seq = self->piped[slot].seq;
    rep->u.audit_rep.fail_open = self->piped[slot].fail_open;
    self->appended++;
    return 0;
}

static int is_hex_len(lk_str_t s, size_t len)
{
    if (s.len != len) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s.ptr[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return 0;
    }
    return 1;
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

/* Text that PostgreSQL refuses (NUL bytes, invalid UTF-8) would abort the batch: checked first. */
static int is_text(lk_str_t s)
{
    if (s.len && memchr(s.ptr, '\0', s.len)) return 0;
    const unsigned char *p = (const unsigned char *)s.ptr, *e = p + s.len;
    while (p < e) {
        unsigned c = *p;
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || (size_t)(e - p) < n) return 0;
        for (size_t i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80) return 0;
        p += n;
    }
    return 1;
}

/* anomaly / hdp (issue 10): a JSON object, or absent. Checked here, since text that is not
 * JSON would abort the whole batch's transaction at the jsonb cast. */
static int is_json_object(lk_str_t s)
{
    if (!s.len) return 1;
    if (!is_text(s)) return 0;
    json_t *v = json_loadb(s.ptr, s.len, JSON_REJECT_DUPLICATES, NULL);
    int ok = json_is_object(v);
    json_decref(v);
    return ok;
}

static int on_audit(audit_t *self, const lk_msg_t *req, lk_msg_t *rep)
{
    const lk_audit_t *a = &req->u.audit;
    if (!is_uuid(a->event_id)) return lk_worker_error(rep, LK_ST_BAD_REQUEST, "event_id is not a UUID");
    const lk_str_t *texts[] = {
        &a->kind,        &a->tenant,   &a->key_id,         &a->user,     &a->source_ip, &a->endpoint,
        &a->provider_id, &a->model,    &a->upstream_model, &a->decision, &a->policy_id, &a->rule_id,
        &a->error_code,  &a->trace_id, &a->agent,          &a->approver, &req->env.rid};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        if (!is_text(*texts[i]))
            return lk_worker_error(rep, LK_ST_BAD_REQUEST, "audit field is not UTF-8 text");
    if (!is_json_object(a->anomaly) || !is_json_object(a->hdp))
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "audit anom / hdp is not a JSON object");
    /* numbers PostgreSQL would refuse (an int column overflowing, a time past the year 9999),
     * which would abort the whole group commit */
    if (a->time_ms > 253402300799999LL || a->http_status < 0 || a->http_status > INT32_MAX ||
        a->upstream_status < 0 || a->upstream_status > INT32_MAX)
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "audit time or status out of range");
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
    lk_db_param_str_or_null(&p, a->agent);
    lk_db_param_str_or_null(&p, a->approver);
    param_i64_or_null(&p, a->cost_micros, a->cost_micros > 0);
    if (is_hex_len(a->request_sha, 64))
        lk_db_param_str(&p, a->request_sha);
    else
        lk_db_param_null(&p);
    if (is_hex_len(a->answer_sha, 64))
        lk_db_param_str(&p, a->answer_sha);
    else
        lk_db_param_null(&p);
    /* content is best effort: text PostgreSQL cannot hold is left out (its digest is kept) */
    lk_db_param_str_or_null(&p, is_text(a->request_body) ? a->request_body : (lk_str_t){NULL, 0});
    lk_db_param_str_or_null(&p, is_text(a->answer_body) ? a->answer_body : (lk_str_t){NULL, 0});
    lk_db_param_str_or_null(&p, a->provider_id2); /* fallback (issue 7) */
    lk_db_param_str_or_null(&p, a->upstream_model2);
    lk_db_param_str_or_null(&p, a->anomaly); /* issue 10 */
    lk_db_param_str_or_null(&p, a->hdp);

    const char *stmt = self->outbox ? "audit_append_outbox" : "audit_append";
    if (self->pipe) { /* inside a group commit: answered by audit_batch_reply after the commit */
        if (self->pipe_n >= AUDIT_PIPE_MAX || lk_db_pipe_send(self->db, stmt, &p) != 0)
            return lk_worker_error(rep, LK_ST_UNAVAILABLE, "audit event not recorded");
        self->piped[self->pipe_n].ok = 0;
        rep->u.audit_rep.seq = (int64_t)self->pipe_n++;
        return 0;
    }
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, stmt, &p, &res);
    if (rc != LK_DB_OK)
        return lk_worker_error(rep, lk_db_status(rc),
                               rc == LK_DB_BAD_INPUT ? "invalid audit event" : "audit event not recorded");
    int ret = 0;
    if (PQntuples(res) != 1 || lk_db_is_null(res, 0, 1)) {
        char rid[LK_PROTO_MAX_RID + 1];
        lk_log(LK_LOG_ERROR, lk_str_copy(rid, sizeof rid, req->env.rid), "audit event was not appended");
        ret = lk_worker_error(rep, LK_ST_UNAVAILABLE, "audit event not recorded");
    } else {
        rep->u.audit_rep.seq = lk_db_i64(res, 0, 1);
        rep->u.audit_rep.fail_open = lk_db_bool(res, 0, 2);
        self->appended++;
    }
    PQclear(res);
    return ret;
}

int audit_checkpoint_now(audit_t *self)
{
    PGresult *res = NULL;
    if (lk_db_exec(self->adb, "audit_heads", NULL, &res) != LK_DB_OK) return -1;
    int n = 0;
    int64_t now = lk_now_ms();
    for (int i = 0; i < PQntuples(res); i++) {
        char chain[256];
        lk_str_copy(chain, sizeof chain, lk_db_str(res, i, 0));
        int64_t seq = lk_db_i64(res, i, 1);
        uint8_t hash[32], sig[64];
        size_t hl = 0;
        if (lk_db_bytea(res, i, 2, hash, sizeof hash, &hl) != 0 || hl != 32) continue;
        char msg[AUDIT_SIGN_MSG_MAX];
        size_t ml = audit_sign_message(msg, sizeof msg, chain, seq, hash, now);
        audit_sign_sign(self->sign, msg, ml, sig);
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, chain);
        lk_db_param_i64(&p, seq);
        lk_db_param_bytes(&p, hash, 32);
        lk_db_param_i64(&p, now);
        lk_db_param_cstr(&p, audit_sign_key_id(self->sign));
        lk_db_param_bytes(&p, sig, 64);
        PGresult *r2 = NULL;
        if (lk_db_exec(self->adb, "audit_checkpoint", &p, &r2) == LK_DB_OK) n++;
        PQclear(r2);
    }
    PQclear(res);
    self->checkpoints += (uint64_t)n;
    return n;
}

void audit_tick(void *ctx)
{
    audit_t *self = ctx;
    int64_t now = lk_now_ms();
    PGresult *res = NULL;
    if (now >= self->next_partitions_ms) {
        if (lk_db_exec(self->adb, "audit_partitions", NULL, &res) == LK_DB_OK) {
            self->next_partitions_ms = now + 3600 * 1000;
            if (lk_db_i64(res, 0, 0) > 0)
                lk_log_info("created %lld audit partitions", (long long)lk_db_i64(res, 0, 0));
        } else {
            self->next_partitions_ms = now + 5000;
        }
        PQclear(res);
        res = NULL;
    }
    if (now >= self->next_checkpoint_ms) {
        self->next_checkpoint_ms = now + self->cfg.checkpoint_interval_ms;
        (void)audit_checkpoint_now(self);
    }
    if (now >= self->next_retention_ms) {
        self->next_retention_ms = now + self->cfg.retention_interval_ms;
        if (lk_db_exec(self->adb, "audit_retention", NULL, &res) == LK_DB_OK && lk_db_i64(res, 0, 0) > 0)
            lk_log_info("retention deleted %lld audit events", (long long)lk_db_i64(res, 0, 0));
        PQclear(res);
    }
}

int audit_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (req->env.type == LK_MSG_AUDIT) return on_audit(ctx, req, rep);
    if (req->env.type == LK_MSG_ADMIN_REQ) return audit_admin_handle(ctx, req, rep, scratch);
    return lk_worker_error(rep, LK_ST_BAD_REQUEST, "audit does not handle this message type");
}
