/*  audit_admin - the audit.* admin operations (query, verify, settings,
 *  retention, checkpoint, status), on audit's second database connection.
 *
 *  Every op is confined to the caller's tenant (its chain). Answers are JSON
 *  built by PostgreSQL (query pages) or jansson. The verifier recomputes each
 *  row's hash in C from the stored columns, independently of the database's
 *  audit_canonical(), and checks every checkpoint signature.
 */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "lk_log.h"
#include "lk_worker.h"

#define VERIFY_PAGE 5000

#define QUERY_HEAD "SELECT coalesce(json_agg(x ORDER BY x.seq), '[]')::text, max(x.seq), count(*) FROM ("
#define QUERY_BODY                                                                                           \
    "SELECT seq, event_id, kind, request_id, "                                                               \
    "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS time, tenant_id AS tenant, "   \
    "key_id, "                                                                                               \
    "user_id AS \"user\", source_ip, endpoint, provider_id, model, upstream_model, decision, policy_id, "    \
    "policy_version, rule_id, http_status, upstream_status, latency_us, prompt_tokens, completion_tokens, "  \
    "total_tokens, cost_micros, error_code, trace_id, stream, agent, approver, "                             \
    "encode(request_sha256, 'hex') AS request_sha256, encode(answer_sha256, 'hex') AS answer_sha256, "       \
    "request_body, answer_body, chain_seq, encode(prev_hash, 'hex') AS prev_hash, "                          \
    "encode(row_hash, 'hex') AS row_hash, fallback_provider_id, fallback_upstream_model, anomaly, hdp "      \
    "FROM audit_events WHERE chain = $1::text AND seq > $2::bigint "                                         \
    "AND ($3::text IS NULL OR key_id = $3::text) AND ($4::text IS NULL OR decision = $4::text) "             \
    "AND ($5::text IS NULL OR model = $5::text OR upstream_model = $5::text) "                               \
    "AND ($6::text IS NULL OR time >= $6::text::timestamptz) AND ($7::text IS NULL OR time < "               \
    "$7::text::timestamptz) "                                                                                \
    "AND ($9::text IS NULL OR kind = $9::text) "
static const char SQL_QUERY[] = QUERY_HEAD QUERY_BODY "ORDER BY seq LIMIT $8::int) x";
/* the last N events (tail): newest first inside, oldest first in the answer */
static const char SQL_QUERY_LAST[] = QUERY_HEAD QUERY_BODY "ORDER BY seq DESC LIMIT $8::int) x";

static const char SQL_HEAD[] =
    "SELECT last_seq, encode(last_hash, 'hex'), retained_from FROM audit_chain WHERE chain = $1::text";

static const char SQL_VERIFY_PAGE[] =
    "SELECT chain_seq, encode(prev_hash, 'hex'), encode(row_hash, 'hex'), "
    "chain, event_id::text, kind, request_id, ((extract(epoch FROM time) * 1000000)::bigint)::text, "
    "tenant_id, "
    "key_id, user_id, source_ip, endpoint, provider_id, model, upstream_model, decision, policy_id, "
    "policy_version::text, rule_id, http_status::text, upstream_status::text, latency_us::text, "
    "prompt_tokens::text, completion_tokens::text, total_tokens::text, error_code, trace_id, stream::text, "
    "agent, approver, cost_micros::text, encode(request_sha256, 'hex'), encode(answer_sha256, 'hex'), "
    "fallback_provider_id, fallback_upstream_model, anomaly::text, hdp::text "
    "FROM audit_events WHERE chain = $1::text AND chain_seq > $2::bigint ORDER BY chain_seq LIMIT "
    "5000";

static const char SQL_CHECKPOINTS[] = "SELECT chain_seq, encode(row_hash, 'hex'), signed_at_ms, "
                                      "encode(signature, 'hex') FROM audit_checkpoints "
                                      "WHERE chain = $1::text ORDER BY chain_seq";

static const char SQL_SETTINGS_GET[] =
    "SELECT json_build_object('tenant', id, 'content', audit_content, 'fail_open', audit_fail_open, "
    "'retention', audit_retention::text, 'siem_format', audit_siem_format)::text FROM tenants WHERE id = "
    "$1::text";

static const char SQL_SETTINGS_SET[] =
    "UPDATE tenants SET audit_content = coalesce($2::text::boolean, audit_content), "
    "audit_fail_open = coalesce($3::text::boolean, audit_fail_open), "
    "audit_retention = coalesce($4::text::interval, audit_retention), "
    "audit_siem_format = coalesce($5::text, audit_siem_format) WHERE id = $1::text "
    "RETURNING json_build_object('tenant', id, 'content', audit_content, 'fail_open', audit_fail_open, "
    "'retention', audit_retention::text, 'siem_format', audit_siem_format)::text";

static const char SQL_BACKLOG[] =
    "SELECT count(*), coalesce(min(created_at) < now() - interval '0 s', false), "
    "coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint FROM audit_outbox";

int audit_admin_prepare(lk_db_t *adb)
{
    return (lk_db_prepare(adb, "audit_query", SQL_QUERY) != 0 ||
            lk_db_prepare(adb, "audit_query_last", SQL_QUERY_LAST) != 0 ||
            lk_db_prepare(adb, "audit_head", SQL_HEAD) != 0 ||
            lk_db_prepare(adb, "audit_verify_page", SQL_VERIFY_PAGE) != 0 ||
            lk_db_prepare(adb, "audit_checkpoints", SQL_CHECKPOINTS) != 0 ||
            lk_db_prepare(adb, "audit_settings_get", SQL_SETTINGS_GET) != 0 ||
            lk_db_prepare(adb, "audit_settings_set", SQL_SETTINGS_SET) != 0 ||
            lk_db_prepare(adb, "audit_backlog", SQL_BACKLOG) != 0)
               ? -1
               : 0;
}

/* ------------------------------------------------------------- replies -- */

static int reply_text(lk_msg_t *rep, lk_buf_t *scratch, const char *s, size_t n)
{
    lk_buf_reset(scratch);
    if (lk_buf_append(scratch, s, n) != 0) return lk_worker_error(rep, LK_ST_INTERNAL, "out of memory");
    rep->u.admin_rep.status = LK_ST_OK;
    rep->u.admin_rep.json = (lk_str_t){(const char *)scratch->data, scratch->len};
    return 0;
}

static int reply_json(lk_msg_t *rep, lk_buf_t *scratch, json_t *body)
{
    if (!body) return lk_worker_error(rep, LK_ST_INTERNAL, "out of memory");
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s) return lk_worker_error(rep, LK_ST_INTERNAL, "out of memory");
    int rc = reply_text(rep, scratch, s, strlen(s));
    free(s);
    return rc;
}

static int bad_request(lk_msg_t *rep, lk_buf_t *scratch, const char *msg)
{
    json_t *b = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type", "invalid_request_error",
                          "code", "invalid_request");
    int rc = reply_json(rep, scratch, b);
    rep->u.admin_rep.status = LK_ST_BAD_REQUEST;
    return rc;
}

static int db_failed(lk_msg_t *rep, lk_db_rc_t rc)
{
    return lk_worker_error(rep, rc == LK_DB_BAD_INPUT ? LK_ST_BAD_REQUEST : lk_db_status(rc),
                           rc == LK_DB_BAD_INPUT ? "invalid filter value" : lk_db_message(rc));
}

/* A string member, or NULL (absent / null). -1 when present and not a string. */
static int get_str(json_t *body, const char *name, const char **out)
{
    json_t *v = json_object_get(body, name);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) return -1;
    if (!json_is_string(v) || json_string_length(v) > 256) return -1;
    *out = json_string_value(v);
    return **out ? 0 : (*out = NULL, 0);
}

/* --------------------------------------------------------------- query -- */

static int op_query(audit_t *self, const char *chain, json_t *body, lk_msg_t *rep, lk_buf_t *scratch)
{
    const char *key, *dec, *model, *from, *to, *cursor, *kind, *last;
    if (get_str(body, "last", &last) || get_str(body, "key", &key) || get_str(body, "decision", &dec) ||
        get_str(body, "model", &model) || get_str(body, "from", &from) || get_str(body, "to", &to) ||
        get_str(body, "cursor", &cursor) || get_str(body, "kind", &kind))
        return bad_request(rep, scratch, "filters are strings: key, decision, model, kind, from, to, cursor");
    long long limit = 100, after = 0;
    json_t *lv = json_object_get(body, "limit");
    if (json_is_string(lv)) {
        char *end;
        limit = strtoll(json_string_value(lv), &end, 10);
        if (*end) limit = -1;
    } else if (json_is_integer(lv)) {
        limit = json_integer_value(lv);
    }
    if (last) {
        char *end;
        limit = strtoll(last, &end, 10);
        if (*end) limit = -1;
    }
    if (limit < 1 || limit > 1000) return bad_request(rep, scratch, "limit and last must be 1..1000");
    if (cursor) {
        char *end;
        after = strtoll(cursor, &end, 10);
        if (*end || after < 0) return bad_request(rep, scratch, "cursor is not one this API gave");
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, chain);
    lk_db_param_i64(&p, after);
    const char *opt[] = {key, dec, model, from, to};
    for (size_t i = 0; i < 5; i++) {
        if (opt[i])
            lk_db_param_cstr(&p, opt[i]);
        else
            lk_db_param_null(&p);
    }
    lk_db_param_i64(&p, limit);
    if (kind)
        lk_db_param_cstr(&p, kind);
    else
        lk_db_param_null(&p);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->adb, last ? "audit_query_last" : "audit_query", &p, &res);
    if (rc != LK_DB_OK) return db_failed(rep, rc);
    lk_str_t events = lk_db_str(res, 0, 0);
    long long n = lk_db_i64(res, 0, 2), end_seq = lk_db_is_null(res, 0, 1) ? after : lk_db_i64(res, 0, 1);
    char head[96], tail[128];
    snprintf(head, sizeof head, "{\"events\":");
    snprintf(tail, sizeof tail, ",\"count\":%lld,\"next_cursor\":\"%lld\",\"has_more\":%s}", n, end_seq,
             n == limit && !last ? "true" : "false");
    lk_buf_reset(scratch);
    int ok = lk_buf_append(scratch, head, strlen(head)) == 0 &&
             lk_buf_append(scratch, events.ptr, events.len) == 0 &&
             lk_buf_append(scratch, tail, strlen(tail)) == 0;
    PQclear(res);
    if (!ok) return lk_worker_error(rep, LK_ST_INTERNAL, "out of memory");
    rep->u.admin_rep.status = LK_ST_OK;
    rep->u.admin_rep.json = (lk_str_t){(const char *)scratch->data, scratch->len};
    return 0;
}

/* -------------------------------------------------------------- verify -- */

typedef struct {
    int64_t seq;
    uint8_t hash[32];
    int matched; /* its row was seen */
} cp_t;

static void add_field(crypto_hash_sha256_state *st, const PGresult *res, int row, int col)
{
    if (lk_db_is_null(res, row, col)) {
        crypto_hash_sha256_update(st, (const unsigned char *)"-", 1);
        return;
    }
    lk_str_t v = lk_db_str(res, row, col);
    char len[24];
    int n = snprintf(len, sizeof len, "%zu:", v.len);
    crypto_hash_sha256_update(st, (const unsigned char *)len, (size_t)n);
    crypto_hash_sha256_update(st, (const unsigned char *)v.ptr, v.len);
}

/* row_hash of one verify-page row, recomputed from its columns: sha256(prev || canonical).
 * The last two columns (anomaly, hdp: migration 0017) are appended only when either is
 * present, so rows from before them keep their hash. */
static void row_hash(const PGresult *res, int row, const uint8_t prev[32], uint8_t out[32])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, prev, 32);
    crypto_hash_sha256_update(&st, (const unsigned char *)"lk1|", 4);
    int ncols = PQnfields(res) - 2;
    if (!lk_db_is_null(res, row, ncols) || !lk_db_is_null(res, row, ncols + 1)) ncols += 2;
    for (int col = 3; col < ncols; col++) {
        if (col > 3) crypto_hash_sha256_update(&st, (const unsigned char *)"|", 1);
        if (col == 4) { /* chain_seq and time are plain numbers */
            lk_str_t s = lk_db_str(res, row, 0);
            crypto_hash_sha256_update(&st, (const unsigned char *)s.ptr, s.len);
            crypto_hash_sha256_update(&st, (const unsigned char *)"|", 1);
        }
        if (col == 7) {
            lk_str_t s = lk_db_str(res, row, 7);
            crypto_hash_sha256_update(&st, (const unsigned char *)s.ptr, s.len);
            continue;
        }
        add_field(&st, res, row, col);
    }
    crypto_hash_sha256_final(&st, out);
}

static int hex32(lk_str_t s, uint8_t out[32])
{
    size_t got = 0;
    return s.len == 64 && sodium_hex2bin(out, 32, s.ptr, s.len, NULL, &got, NULL) == 0 && got == 32 ? 0 : -1;
}

static int op_verify(audit_t *self, const char *chain, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, chain);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->adb, "audit_head", &p, &res);
    if (rc != LK_DB_OK) return db_failed(rep, rc);
    int64_t head_seq = 0, retained_from = 1;
    uint8_t head_hash[32] = {0};
    if (PQntuples(res) == 1) {
        head_seq = lk_db_i64(res, 0, 0);
        if (hex32(lk_db_str(res, 0, 1), head_hash) != 0) head_seq = -1;
        retained_from = lk_db_i64(res, 0, 2);
    }
    PQclear(res);
    res = NULL;

    /* checkpoints: signatures first */
    json_t *bad_cps = json_array();
    cp_t *cps = NULL;
    size_t ncps = 0;
    rc = lk_db_exec(self->adb, "audit_checkpoints", &p, &res);
    if (rc != LK_DB_OK) {
        json_decref(bad_cps);
        return db_failed(rep, rc);
    }
    cps = calloc((size_t)PQntuples(res) + 1, sizeof *cps);
    for (int i = 0; cps && i < PQntuples(res); i++) {
        int64_t seq = lk_db_i64(res, i, 0);
        uint8_t hash[32], sig[64];
        size_t sl = 0;
        lk_str_t sh = lk_db_str(res, i, 3);
        int ok = hex32(lk_db_str(res, i, 1), hash) == 0 &&
                 sodium_hex2bin(sig, sizeof sig, sh.ptr, sh.len, NULL, &sl, NULL) == 0;
        if (ok) {
            char msg[AUDIT_SIGN_MSG_MAX];
            size_t ml = audit_sign_message(msg, sizeof msg, chain, seq, hash, lk_db_i64(res, i, 2));
            ok = audit_sign_verify(self->sign, msg, ml, sig, sl);
        }
        if (!ok) {
            json_array_append_new(bad_cps, json_pack("{s:I,s:s}", "seq", (json_int_t)seq, "reason",
                                                     "signature does not verify"));
            continue;
        }
        cps[ncps].seq = seq;
        memcpy(cps[ncps].hash, hash, 32);
        ncps++;
    }
    size_t checked_cps = ncps + json_array_size(bad_cps);
    PQclear(res);
    res = NULL;

    /* the rows, page by page */
    int64_t expected = retained_from, first_bad = 0, rows = 0, first_seq = 0, last_seen = 0, after = 0;
    const char *reason = NULL;
    uint8_t prev[32] = {0};
    int prev_known = retained_from <= 1;
    size_t cpi = 0;
    for (;;) {
        lk_db_params_t q;
        lk_db_params_init(&q);
        lk_db_param_cstr(&q, chain);
        lk_db_param_i64(&q, after);
        rc = lk_db_exec(self->adb, "audit_verify_page", &q, &res);
        if (rc != LK_DB_OK) {
            free(cps);
            json_decref(bad_cps);
            return db_failed(rep, rc);
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            int64_t seq = lk_db_i64(res, i, 0);
            uint8_t rp[32], rh[32], calc[32];
            if (!first_seq) first_seq = seq;
            rows++;
            after = seq;
            last_seen = seq;
            if (first_bad) continue;
            if (hex32(lk_db_str(res, i, 1), rp) != 0 || hex32(lk_db_str(res, i, 2), rh) != 0) {
                first_bad = seq;
                reason = "hash columns are malformed";
                continue;
            }
            if (seq != expected) {
                first_bad = seq > expected ? expected : seq;
                reason = seq > expected ? "event missing (deleted)" : "event duplicated or out of order";
                continue;
            }
            row_hash(res, i, rp, calc);
            if (sodium_memcmp(calc, rh, 32) != 0) {
                first_bad = seq;
                reason = "event altered (its hash does not match its content)";
                continue;
            }
            if (prev_known && sodium_memcmp(prev, rp, 32) != 0) {
                first_bad = seq;
                reason = "chain broken (prev_hash does not match the previous event: deleted or reordered)";
                continue;
            }
            while (cpi < ncps && cps[cpi].seq < seq)
                cpi++;
            if (cpi < ncps && cps[cpi].seq == seq) {
                cps[cpi].matched = 1;
                if (sodium_memcmp(cps[cpi].hash, rh, 32) != 0) {
                    first_bad = seq;
                    reason = "event does not match its signed checkpoint";
                    continue;
                }
            }
            memcpy(prev, rh, 32);
            prev_known = 1;
            expected = seq + 1;
        }
        PQclear(res);
        res = NULL;
        if (n < VERIFY_PAGE) break;
    }
    if (!first_bad && head_seq < 0) {
        first_bad = expected;
        reason = "chain head is malformed";
    }
    if (!first_bad && head_seq >= expected) {
        first_bad = expected;
        reason = "events missing at the end of the chain (deleted)";
    }
    if (!first_bad && rows > 0 && sodium_memcmp(prev, head_hash, 32) != 0) {
        first_bad = last_seen;
        reason = "last event does not match the chain head";
    }
    /* a checkpoint inside the retained range whose row was never seen */
    for (size_t i = 0; !first_bad && i < ncps; i++)
        if (!cps[i].matched && cps[i].seq >= retained_from && cps[i].seq <= head_seq) {
            first_bad = cps[i].seq;
            reason = "a checkpointed event is missing";
        }
    free(cps);
    int ok = !first_bad && json_array_size(bad_cps) == 0;
    json_t *b =
        json_pack("{s:b,s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:I,s:o,s:s}", "ok", ok, "tenant", chain,
                  "events_checked", (json_int_t)rows, "first_seq", (json_int_t)first_seq, "last_seq",
                  (json_int_t)last_seen, "retained_from", (json_int_t)retained_from, "first_bad_seq",
                  first_bad ? json_integer(first_bad) : json_null(), "reason",
                  reason ? json_string(reason) : json_null(), "checkpoints_checked", (json_int_t)checked_cps,
                  "bad_checkpoints", bad_cps, "public_key", audit_sign_public_hex(self->sign));
    return reply_json(rep, scratch, b);
}

/* ------------------------------------------------------------ settings -- */

static int op_settings(audit_t *self, const char *tenant, json_t *body, int update, lk_msg_t *rep,
                       lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, tenant);
    if (update) {
        const char *names[] = {"content", "fail_open", "retention", "siem_format", NULL};
        const char *k;
        json_t *v;
        json_object_foreach(body, k, v)
        {
            int known = 0;
            for (size_t i = 0; names[i]; i++)
                known |= strcmp(k, names[i]) == 0;
            if (!known)
                return bad_request(rep, scratch,
                                   "unknown setting (content, fail_open, retention, siem_format)");
        }
        for (int i = 0; i < 2; i++) {
            json_t *b = json_object_get(body, names[i]);
            if (b && !json_is_boolean(b))
                return bad_request(rep, scratch, "content and fail_open are booleans");
            if (b)
                lk_db_param_cstr(&p, json_is_true(b) ? "true" : "false");
            else
                lk_db_param_null(&p);
        }
        const char *ret, *fmt;
        if (get_str(body, "retention", &ret) || get_str(body, "siem_format", &fmt))
            return bad_request(rep, scratch, "retention (e.g. \"90 days\") and siem_format are strings");
        if (fmt && strcmp(fmt, "ocsf") != 0 && strcmp(fmt, "ecs") != 0)
            return bad_request(rep, scratch, "siem_format is ocsf or ecs");
        if (ret)
            lk_db_param_cstr(&p, ret);
        else
            lk_db_param_null(&p);
        if (fmt)
            lk_db_param_cstr(&p, fmt);
        else
            lk_db_param_null(&p);
    }
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->adb, update ? "audit_settings_set" : "audit_settings_get", &p, &res);
    if (rc != LK_DB_OK) return db_failed(rep, rc);
    int ret;
    if (PQntuples(res) != 1) {
        ret = lk_worker_error(rep, LK_ST_NOT_FOUND, "tenant not found");
    } else {
        lk_str_t s = lk_db_str(res, 0, 0);
        ret = reply_text(rep, scratch, s.ptr, s.len);
    }
    PQclear(res);
    return ret;
}

/* -------------------------------------------------------------- status -- */

static int op_status(audit_t *self, lk_msg_t *rep, lk_buf_t *scratch)
{
    PGresult *res = NULL;
    json_int_t backlog = -1, oldest_s = 0;
    if (lk_db_exec(self->adb, "audit_backlog", NULL, &res) == LK_DB_OK) {
        backlog = lk_db_i64(res, 0, 0);
        oldest_s = lk_db_i64(res, 0, 2);
    }
    PQclear(res);
    audit_kafka_stats_t ks = {0};
    if (self->kafka) ks = audit_kafka_stats(self->kafka);
    json_t *b = json_pack(
        "{s:s,s:s,s:I,s:I,s:I,s:I,s:{s:b,s:I,s:I,s:I,s:b}}", "public_key", audit_sign_public_hex(self->sign),
        "key_id", audit_sign_key_id(self->sign), "appended", (json_int_t)self->appended, "checkpoints",
        (json_int_t)self->checkpoints, "outbox_backlog", backlog, "outbox_oldest_seconds", oldest_s, "kafka",
        "enabled", self->kafka != NULL, "delivered", (json_int_t)ks.delivered, "delivery_errors",
        (json_int_t)ks.delivery_errors, "in_flight", (json_int_t)ks.in_flight, "draining", ks.draining);
    return reply_json(rep, scratch, b);
}

/* ---------------------------------------------------------------- ops -- */

int audit_admin_handle(audit_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_admin_req_t *a = &req->u.admin_req;
    char tenant[128];
    lk_str_copy(tenant, sizeof tenant, a->tenant);
    json_t *body = NULL;
    if (a->json.len) {
        json_error_t jerr;
        body = json_loadb(a->json.ptr, a->json.len, 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            return bad_request(rep, scratch, "the request body must be a JSON object");
        }
    } else {
        body = json_object();
    }
    int rc;
    if (lk_str_eq(a->op, "audit.query"))
        rc = op_query(self, tenant, body, rep, scratch);
    else if (lk_str_eq(a->op, "audit.verify")) {
        (void)audit_checkpoint_now(self); /* sign what is there, then check everything */
        rc = op_verify(self, tenant, rep, scratch);
    } else if (lk_str_eq(a->op, "audit.settings.get"))
        rc = op_settings(self, tenant, body, 0, rep, scratch);
    else if (lk_str_eq(a->op, "audit.settings.update"))
        rc = op_settings(self, tenant, body, 1, rep, scratch);
    else if (lk_str_eq(a->op, "audit.status"))
        rc = op_status(self, rep, scratch);
    else if (lk_str_eq(a->op, "audit.checkpoint")) {
        int n = audit_checkpoint_now(self);
        rc = n < 0 ? lk_worker_error(rep, LK_ST_UNAVAILABLE, "database unavailable")
                   : reply_json(rep, scratch, json_pack("{s:i}", "signed", n));
    } else if (lk_str_eq(a->op, "audit.retention")) {
        PGresult *res = NULL;
        lk_db_rc_t dr = lk_db_exec(self->adb, "audit_retention", NULL, &res);
        rc = dr != LK_DB_OK
                 ? db_failed(rep, dr)
                 : reply_json(rep, scratch, json_pack("{s:I}", "deleted", (json_int_t)lk_db_i64(res, 0, 0)));
        PQclear(res);
    } else
        rc = lk_worker_error(rep, LK_ST_NOT_FOUND, "unknown audit operation");
    json_decref(body);
    return rc;
}
