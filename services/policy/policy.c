/*  policy - authenticate, scope-check and route one request. */
#include <arpa/inet.h>
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>

#include "lk_log.h"
#include "lk_worker.h"

#define MAX_MODEL 256

/* The newest credential of provider p. */
#define NEWEST_CRED                                                                                          \
    "JOIN LATERAL (SELECT c.id FROM credentials c WHERE c.provider_id = p.id AND c.tenant_id = p.tenant_id " \
    "ORDER BY c.created_at DESC, c.id DESC LIMIT 1) c ON true "

/* $1 key hash, $2 model, $3 source address (NULL if unknown). Route: an admin
 * route whose alias is the model (its provider, upstream model and optional
 * fallback); else the key's tenant's providers serving the model (explicitly
 * first, then those serving any model; oldest first). Only providers with a
 * credential (the newest one). */
static const char SQL_DECIDE[] =
    "SELECT k.id, k.tenant_id, k.user_id, k.revoked_at IS NOT NULL, "
    "       k.expires_at IS NOT NULL AND k.expires_at <= now(), "
    "       cardinality(k.allowed_models) = 0 OR $2::text = ANY (k.allowed_models), "
    "       r.id, r.kind, r.base_url, r.cred_id, "
    "       cardinality(k.allowed_ips) = 0 OR COALESCE($3::text::inet <<= ANY (k.allowed_ips), false), "
    "       r.umodel, f.id, f.kind, f.base_url, f.cred_id, r.fb_model "
    "FROM api_keys k "
    "LEFT JOIN LATERAL (SELECT * FROM ("
    "    SELECT 0 AS pri, p.id, p.kind, p.base_url, c.id AS cred_id, rt.upstream_model AS umodel, "
    "           rt.fallback_provider_id AS fb_prov, rt.fallback_upstream_model AS fb_model, p.created_at "
    "    FROM routes rt JOIN providers p ON p.id = rt.provider_id AND p.tenant_id = rt.tenant_id " NEWEST_CRED
    "    WHERE rt.tenant_id = k.tenant_id AND rt.alias = $2::text "
    "    UNION ALL "
    "    SELECT CASE WHEN $2::text = ANY (p.models) THEN 1 ELSE 2 END, p.id, p.kind, p.base_url, c.id, "
    "$2::text, "
    "           NULL, NULL, p.created_at "
    "    FROM providers p " NEWEST_CRED
    "    WHERE p.tenant_id = k.tenant_id AND ($2::text = ANY (p.models) OR cardinality(p.models) = 0) "
    "  ) x ORDER BY pri, created_at, id LIMIT 1) r ON true "
    "LEFT JOIN LATERAL (SELECT p.id, p.kind, p.base_url, c.id AS cred_id FROM providers p " NEWEST_CRED
    "    WHERE p.id = r.fb_prov AND p.tenant_id = k.tenant_id) f ON true "
    "WHERE k.hash = $1::bytea";

enum {
    C_KEY,
    C_TENANT,
    C_USER,
    C_REVOKED,
    C_EXPIRED,
    C_MODEL_OK,
    C_PROV,
    C_KIND,
    C_URL,
    C_CRED,
    C_IP_OK,
    C_UMODEL,
    C_PROV2,
    C_KIND2,
    C_URL2,
    C_CRED2,
    C_UMODEL2
};

/* DECIDE with endpoint "models": $1 key hash, $2 source address. The model ids
 * the key may use: route aliases and providers' listed models of its tenant
 * (providers with a credential), limited to its allowed_models if it has any. */
static const char SQL_MODELS[] =
    "SELECT k.id, k.tenant_id, k.user_id, k.revoked_at IS NOT NULL, "
    "       k.expires_at IS NOT NULL AND k.expires_at <= now(), "
    "       cardinality(k.allowed_ips) = 0 OR COALESCE($2::text::inet <<= ANY (k.allowed_ips), false), "
    "       COALESCE((SELECT json_agg(m ORDER BY m)::text FROM (SELECT DISTINCT m FROM ("
    "           SELECT unnest(p.models) AS m FROM providers p "
    "           WHERE p.tenant_id = k.tenant_id AND EXISTS (SELECT 1 FROM credentials c WHERE c.provider_id "
    "= p.id) "
    "           UNION SELECT rt.alias FROM routes rt WHERE rt.tenant_id = k.tenant_id) s "
    "         WHERE cardinality(k.allowed_models) = 0 OR m = ANY (k.allowed_models)) t), '[]') "
    "FROM api_keys k WHERE k.hash = $1::bytea";

/* Copies s into buf if it is a plain IPv4 or IPv6 address. 1 / 0. */
static int valid_ip(lk_str_t s, char *buf, size_t cap)
{
    unsigned char bin[sizeof(struct in6_addr)];
    if (s.len == 0 || s.len >= cap) return 0;
    lk_str_copy(buf, cap, s);
    return inet_pton(AF_INET, buf, bin) == 1 || inet_pton(AF_INET6, buf, bin) == 1;
}

policy_t *policy_new(const char *conninfo, int db_wait_ms, int statement_timeout_ms)
{
    policy_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->db = lk_db_new(conninfo, "lumkey-policy", statement_timeout_ms);
    if (!self->db || lk_db_prepare(self->db, "decide", SQL_DECIDE) != 0 ||
        lk_db_prepare(self->db, "models", SQL_MODELS) != 0) {
        policy_destroy(&self);
        return NULL;
    }
    if (lk_db_connect(self->db, db_wait_ms) != 0) lk_log_warn("database not reachable yet; will keep trying");
    return self;
}

void policy_destroy(policy_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_destroy(&(*self_p)->db);
    free(*self_p);
    *self_p = NULL;
}

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3
                     : (c & 0xf8) == 0xf0 ? 4
                                          : 0;
        if (!len || i + len > n || (len == 2 && c < 0xc2) || (len == 4 && c > 0xf4) || c == 0) return 0;
        for (size_t j = 1; j < len; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

/* A decided refusal: DECIDE_REP with status, code and message (identity kept if known). */
static void refuse(lk_decide_rep_t *d, lk_status_t st, const char *code, const char *message)
{
    d->status = st;
    d->error_code = lk_str(code);
    d->message = lk_str(message);
}

/* A refusal whose message names the model (already checked: <= MAX_MODEL bytes of UTF-8). */
static void refuse_model(policy_t *self, lk_decide_rep_t *d, lk_status_t st, const char *code,
                         const char *before, lk_str_t model, const char *after)
{
    snprintf(self->msg, sizeof self->msg, "%s%.*s%s", before, (int)model.len, model.ptr, after);
    refuse(d, st, code, self->msg);
}

/* DECIDE for GET /v1/models: authenticate, then list the key's models. */
static int on_models(policy_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_decide_t *q = &req->u.decide;
    lk_decide_rep_t *d = &rep->u.decide_rep;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_bytes(&p, q->key_hash, sizeof q->key_hash);
    char ip[INET6_ADDRSTRLEN];
    if (valid_ip(q->source_ip, ip, sizeof ip))
        lk_db_param_cstr(&p, ip);
    else
        lk_db_param_null(&p);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "models", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int ret = 0;
    if (PQntuples(res) != 1) {
        refuse(d, LK_ST_UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided.");
        goto cleanup;
    }
    d->key_id = lk_db_str(res, 0, 0);
    d->tenant = lk_db_str(res, 0, 1);
    d->user = lk_db_str(res, 0, 2);
    if (lk_db_bool(res, 0, 3)) {
        refuse(d, LK_ST_UNAUTHORIZED, "key_revoked", "This API key has been revoked.");
    } else if (lk_db_bool(res, 0, 4)) {
        refuse(d, LK_ST_UNAUTHORIZED, "key_expired", "This API key has expired.");
    } else if (!lk_db_bool(res, 0, 5)) {
        refuse(d, LK_ST_FORBIDDEN, "ip_not_allowed", "This API key may not be used from this address.");
    } else {
        d->status = LK_ST_OK;
        d->decision = LK_DECISION_ALLOW;
        d->models = lk_db_str(res, 0, 6);
    }
    lk_str_t *keep[] = {&d->key_id, &d->tenant, &d->user, &d->models};
    ret = lk_worker_keep(scratch, keep, sizeof keep / sizeof keep[0]);
cleanup:
    PQclear(res);
    return ret;
}

static int on_decide(policy_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_decide_t *q = &req->u.decide;
    lk_decide_rep_t *d = &rep->u.decide_rep;
    if (lk_str_eq(q->endpoint, "models")) return on_models(self, req, rep, scratch);
    if (q->model.len == 0) {
        refuse(d, LK_ST_BAD_REQUEST, "missing_model", "You must provide a model parameter.");
        return 0;
    }
    /* a model name the database cannot hold is a model nobody serves */
    int model_ok = q->model.len <= MAX_MODEL && valid_utf8((const unsigned char *)q->model.ptr, q->model.len);

    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_bytes(&p, q->key_hash, sizeof q->key_hash);
    lk_db_param_str(&p, model_ok ? q->model : LK_STR_NULL);
    char ip[INET6_ADDRSTRLEN];
    if (valid_ip(q->source_ip, ip, sizeof ip))
        lk_db_param_cstr(&p, ip);
    else
        lk_db_param_null(&p); /* unknown address: only keys without an allowlist pass */
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "decide", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int ret = 0;
    if (PQntuples(res) != 1) {
        refuse(d, LK_ST_UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided.");
        goto cleanup;
    }
    d->key_id = lk_db_str(res, 0, C_KEY);
    d->tenant = lk_db_str(res, 0, C_TENANT);
    d->user = lk_db_str(res, 0, C_USER);
    if (lk_db_bool(res, 0, C_REVOKED)) {
        refuse(d, LK_ST_UNAUTHORIZED, "key_revoked", "This API key has been revoked.");
    } else if (lk_db_bool(res, 0, C_EXPIRED)) {
        refuse(d, LK_ST_UNAUTHORIZED, "key_expired", "This API key has expired.");
    } else if (!lk_db_bool(res, 0, C_IP_OK)) {
        refuse(d, LK_ST_FORBIDDEN, "ip_not_allowed", "This API key may not be used from this address.");
    } else if (!model_ok) {
        refuse(d, LK_ST_NOT_FOUND, "model_not_found",
               "The model does not exist or you do not have access to it.");
    } else if (!lk_db_bool(res, 0, C_MODEL_OK)) {
        refuse_model(self, d, LK_ST_FORBIDDEN, "model_not_allowed",
                     "This API key is not allowed to use the model `", q->model, "`.");
    } else if (lk_db_is_null(res, 0, C_PROV)) {
        refuse_model(self, d, LK_ST_NOT_FOUND, "model_not_found", "The model `", q->model,
                     "` does not exist or you do not have access to it.");
    } else {
        d->status = LK_ST_OK;
        d->decision = LK_DECISION_ALLOW;
        d->provider_id = lk_db_str(res, 0, C_PROV);
        d->provider_kind = lk_db_str(res, 0, C_KIND);
        d->base_url = lk_db_str(res, 0, C_URL);
        d->cred_id = lk_db_str(res, 0, C_CRED);
        d->upstream_model = lk_db_str(res, 0, C_UMODEL); /* the route's, or the model as requested */
        if (!lk_db_is_null(res, 0, C_PROV2)) {
            d->provider_id2 = lk_db_str(res, 0, C_PROV2);
            d->provider_kind2 = lk_db_str(res, 0, C_KIND2);
            d->base_url2 = lk_db_str(res, 0, C_URL2);
            d->cred_id2 = lk_db_str(res, 0, C_CRED2);
            d->upstream_model2 = lk_db_str(res, 0, C_UMODEL2);
        }
    }
    lk_str_t *keep[] = {&d->key_id,    &d->tenant,   &d->user,           &d->provider_id,  &d->provider_kind,
                        &d->base_url,  &d->cred_id,  &d->upstream_model, &d->provider_id2, &d->provider_kind2,
                        &d->base_url2, &d->cred_id2, &d->upstream_model2};
    ret = lk_worker_keep(scratch, keep, sizeof keep / sizeof keep[0]);
cleanup:
    PQclear(res);
    return ret;
}

int policy_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (req->env.type == LK_MSG_DECIDE) return on_decide(ctx, req, rep, scratch);
    return lk_worker_error(rep, LK_ST_BAD_REQUEST, "policy does not handle this message type");
}
