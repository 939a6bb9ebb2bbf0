/*  policy - authenticate, scope-check and route one request. */
#include <arpa/inet.h>
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_log.h"
#include "lk_util.h"
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
 * credential (the newest one). Policy: the key's own, else its tenant's
 * default; its current version. */
static const char SQL_DECIDE[] =
    "SELECT k.id, k.tenant_id, k.user_id, k.revoked_at IS NOT NULL, "
    "       k.expires_at IS NOT NULL AND k.expires_at <= now(), "
    "       cardinality(k.allowed_models) = 0 OR $2::text = ANY (k.allowed_models), "
    "       r.id, r.kind, r.base_url, r.cred_id, "
    "       cardinality(k.allowed_ips) = 0 OR COALESCE($3::text::inet <<= ANY (k.allowed_ips), false), "
    "       COALESCE(k.metadata->>'agent', ''), COALESCE(k.metadata->>'team', ''), pol.id, "
    "pol.current_version, "
    "       r.umodel, f.id, f.kind, f.base_url, f.cred_id, r.fb_model, "
    "       EXTRACT(EPOCH FROM k.expires_at - now())::float8 "
    "FROM api_keys k "
    "JOIN tenants t ON t.id = k.tenant_id "
    "LEFT JOIN policies pol ON pol.id = COALESCE(k.policy_id, t.default_policy_id) AND pol.tenant_id = "
    "k.tenant_id "
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

/* $1 tenant, $2 policy id, $3 version. */
static const char SQL_POLICY_DOC[] =
    "SELECT v.document FROM policy_versions v JOIN policies p ON p.id = v.policy_id "
    "WHERE p.tenant_id = $1 AND v.policy_id = $2 AND v.version = $3::int";

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
    C_AGENT,
    C_TEAM,
    C_POL,
    C_POL_VER,
    C_UMODEL,
    C_PROV2,
    C_KIND2,
    C_URL2,
    C_CRED2,
    C_UMODEL2,
    C_EXPIRES_IN /* seconds until the key expires, NULL if never: bounds the row's cache life */
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
        lk_db_prepare(self->db, "policy_doc", SQL_POLICY_DOC) != 0 || policy_budget_prepare(self->db) != 0 ||
        policy_admin_prepare(self->db) != 0 || lk_db_prepare(self->db, "models", SQL_MODELS) != 0 ||
        !(self->anom_db = lk_db_new(conninfo, "lumkey-policy-anomaly", statement_timeout_ms)) ||
        pa_prepare(self->anom_db) != 0 ||
        !(self->anom = pa_new(self->anom_db, getenv("LUMKEY_POLICY_REPLICA_ID"))) ||
        policy_hdp_prepare(self->db) != 0 || !(self->hdp = policy_hdp_new())) {
        policy_destroy(&self);
        return NULL;
    }
    const char *age = getenv("LUMKEY_CACHE_MAX_AGE_MS");
    self->decide_cache =
        lk_db_live_new(conninfo, "lumkey-policy-listen", "lumkey_cache",
                       age && *age ? atoi(age) : POLICY_CACHE_AGE_MS, POLICY_CACHE_SLOTS, NULL);
    if (!self->decide_cache) {
        policy_destroy(&self);
        return NULL;
    }
    if (lk_db_connect(self->db, db_wait_ms) != 0) lk_log_warn("database not reachable yet; will keep trying");
    (void)lk_db_live_sync(self->decide_cache); /* connects the LISTEN connection */
    return self;
}

void policy_tick(void *ctx)
{
    policy_t *self = ctx;
    (void)lk_db_live_sync(self->decide_cache);
    pa_tick(self->anom, 0); /* flushes and refreshes the anomaly baselines */
}

void policy_destroy(policy_t **self_p)
{
    if (!self_p || !*self_p) return;
    pa_free(&(*self_p)->anom); /* writes the baselines' last changes */
    lk_db_destroy(&(*self_p)->anom_db);
    for (int i = 0; i < POLICY_CACHE_N; i++)
        lk_policy_free(&(*self_p)->cache[i].pol);
    lk_policy_result_clear(&(*self_p)->result);
    policy_hdp_destroy(&(*self_p)->hdp);
    lk_db_live_destroy(&(*self_p)->decide_cache);
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

/* ------------------------------------------------------- compiled cache -- */

const lk_policy_t *policy_compiled(policy_t *self, lk_str_t tenant, lk_str_t id, int64_t version,
                                   lk_status_t *st)
{
    self->tick++;
    policy_cache_entry_t *victim = &self->cache[0];
    for (int i = 0; i < POLICY_CACHE_N; i++) {
        policy_cache_entry_t *e = &self->cache[i];
        if (e->pol && e->version == version && lk_str_eq(id, e->id)) {
            e->used = self->tick;
            return e->pol;
        }
        if (!e->pol || (victim->pol && e->used < victim->used)) victim = e;
    }
    if (id.len == 0 || id.len >= POLICY_ID_MAX) {
        *st = LK_ST_NOT_FOUND;
        return NULL;
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, tenant);
    lk_db_param_str(&p, id);
    lk_db_param_i64(&p, version);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "policy_doc", &p, &res);
    if (rc != LK_DB_OK) {
        *st = lk_db_status(rc);
        return NULL;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        *st = LK_ST_NOT_FOUND;
        return NULL;
    }
    lk_policy_error_t err;
    lk_str_t doc = lk_db_str(res, 0, 0);
    lk_policy_t *pol = lk_policy_compile(doc.ptr, doc.len, &err);
    PQclear(res);
    if (!pol) {
        lk_log(LK_LOG_ERROR, NULL, "stored policy %.*s version %lld does not compile: %s at %s", (int)id.len,
               id.ptr, (long long)version, err.msg, err.path);
        *st = LK_ST_INTERNAL;
        return NULL;
    }
    lk_policy_free(&victim->pol);
    lk_str_copy(victim->id, sizeof victim->id, id);
    victim->version = version;
    victim->pol = pol;
    victim->used = self->tick;
    return pol;
}

/* ------------------------------------------------------------- decide -- */

static lk_api_t api_of(lk_str_t ep)
{
    char name[32];
    lk_api_t api = lk_policy_api_of(lk_str_copy(name, sizeof name, ep));
    return api ? api : LK_API_CHAT;
}

#define MAX_HEADERS 32

/* Splits "name: value\n" lines (text is copied into buf, NUL-terminated in
 * place) into pairs. Returns the number of pairs. */
static size_t split_headers(lk_str_t text, char *buf, size_t cap, const char *pairs[][2], size_t max)
{
    size_t n = 0;
    if (text.len == 0 || text.len >= cap) return 0;
    memcpy(buf, text.ptr, text.len);
    buf[text.len] = '\0';
    for (char *line = buf; *line && n < max;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ')
                v++;
            pairs[n][0] = line;
            pairs[n][1] = v;
            n++;
        }
        if (!nl) break;
        line = nl + 1;
    }
    return n;
}

static lk_decision_t decision_of(lk_action_t a)
{
    switch (a) {
    case LK_ACT_BLOCK:
        return LK_DECISION_BLOCK;
    case LK_ACT_HOLD:
        return LK_DECISION_HOLD;
    case LK_ACT_REDACT:
        return LK_DECISION_REDACT;
    case LK_ACT_LOG:
        return LK_DECISION_LOG;
    case LK_ACT_ALLOW:
        break;
    }
    return LK_DECISION_ALLOW;
}

/* Runs the policy on the request and fills d (decision, rule, body, estimates,
 * budget). 0, or -1 (could not: d is a refusal or rep an ERROR). */
static int apply_policy(policy_t *self, const lk_msg_t *req, lk_msg_t *rep)
{
    const lk_decide_t *q = &req->u.decide;
    lk_decide_rep_t *d = &rep->u.decide_rep;
    lk_status_t st = LK_ST_OK;
    const lk_policy_t *pol = policy_compiled(self, d->tenant, d->policy_id, d->policy_version, &st);
    if (!pol) {
        if (st == LK_ST_UNAVAILABLE) return lk_worker_error(rep, st, "database unavailable"), -1;
        refuse(d, LK_ST_INTERNAL, "policy_unavailable", "The policy of this key could not be loaded.");
        return -1;
    }
    char hbuf[65536], model[MAX_MODEL + 1]; /* the edge sends up to 64 KiB (HDP tokens) */
    const char *pairs[MAX_HEADERS][2];
    size_t nh = split_headers(q->headers, hbuf, sizeof hbuf, pairs, MAX_HEADERS);
    lk_str_copy(model, sizeof model, q->model);
    char prov[POLICY_ID_MAX], kind[32], kid[POLICY_ID_MAX], user[256], agent[256], team[256];
    lk_str_copy(prov, sizeof prov, d->provider_id);
    lk_str_copy(kind, sizeof kind, d->provider_kind);
    lk_str_copy(kid, sizeof kid, d->key_id);
    lk_str_copy(user, sizeof user, d->user);
    lk_str_copy(agent, sizeof agent, d->agent);
    lk_str_copy(team, sizeof team, d->team);
    lk_policy_ctx_t ctx = {.api = api_of(q->endpoint),
                           .provider_id = prov,
                           .provider_kind = kind,
                           .key_id = kid,
                           .user = user[0] ? user : NULL,
                           .agent = agent[0] ? agent : NULL,
                           .team = team[0] ? team : NULL,
                           .headers = (const char *const(*)[2])pairs,
                           .n_headers = nh,
                           .hdp = self->hdp_facts,
                           .has_anomaly = self->acall.active,
                           .anomaly_score = self->acall.s.score,
                           .anomaly_reasons = self->acall.reason_bits};
    lk_policy_result_t *r = &self->result;
    lk_policy_result_clear(r);
    if (lk_policy_eval_request(pol, &ctx, q->body.ptr ? q->body.ptr : "", q->body.len, r) != 0) {
        snprintf(self->msg, sizeof self->msg, "%s",
                 r->message[0] ? r->message : "The request body is not valid.");
        refuse(d, LK_ST_BAD_REQUEST, "invalid_request", self->msg);
        return -1;
    }
    d->decision = decision_of(r->action);
    if (r->would > r->action) d->would = decision_of(r->would);
    d->rule_id = lk_str(r->rule_id);
    d->answer_rules = lk_policy_has_answer_rules(pol);
    d->est_microusd = r->est_microusd;
    double pin, pout;
    if (lk_policy_price(pol, model, &pin, &pout)) {
        d->priced = 1;
        d->price_in = (int64_t)(pin * 1e6 + 0.5);
        d->price_out = (int64_t)(pout * 1e6 + 0.5);
    }
    if (r->action == LK_ACT_BLOCK) {
        d->error_code = LK_STR_LIT("blocked_by_policy");
        d->message = lk_str(r->message[0] ? r->message : "This request was blocked by a Lumkey policy.");
        return 0;
    }
    if (r->action == LK_ACT_HOLD && r->message[0]) d->message = lk_str(r->message);
    if (r->action == LK_ACT_REDACT) {
        if (!r->body) return lk_worker_error(rep, LK_ST_INTERNAL, "redaction produced no body"), -1;
        d->body = (lk_str_t){r->body, r->body_len};
    }

    /* budgets and rate limits: reserve the maximum now, settle after */
    lk_policy_limits_t lim;
    lk_policy_limits(pol, &lim);
    char scope[600];
    if (lim.per_team && team[0])
        snprintf(scope, sizeof scope, "team:%.*s/%s", (int)d->tenant.len, d->tenant.ptr, team);
    else
        snprintf(scope, sizeof scope, "key:%s", kid);
    policy_budget_req_t b = {.scope = scope,
                             .tokens = r->est_prompt_tokens + r->est_max_tokens,
                             .microusd = r->est_microusd,
                             .model = model,
                             .price_in = -1,
                             .price_out = -1};
    lk_policy_price(pol, model, &b.price_in, &b.price_out);
    const char *code = NULL;
    lk_db_rc_t rc = LK_DB_OK;
    switch (
        policy_budget_reserve(self->db, req->env.rid, &lim, &b, &code, self->msg, sizeof self->msg, &rc)) {
    case BUDGET_OK:
        d->reserved = 1;
        break;
    case BUDGET_NONE:
        break;
    case BUDGET_REFUSED:
        refuse(d, LK_ST_RATE_LIMITED, code, self->msg);
        return -1;
    case BUDGET_DB_ERROR:
        lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
        return -1;
    }
    return 0;
}

/* A boolean of a DECIDE row ('t'). */
static int row_bool(const lk_db_row_t *row, int col)
{
    return row->v[col].len == 1 && row->v[col].ptr[0] == 't';
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

    char ip[INET6_ADDRSTRLEN];
    int ip_ok = valid_ip(q->source_ip, ip, sizeof ip);
    /* a known key: its row from the cache, if nothing changed since (policy_cache.h) */
    uint8_t ckey[POLICY_CACHE_KEY_MAX];
    size_t ckey_len = 0;
    lk_db_row_t row;
    PGresult *res = NULL;
    int ret = 0;
    if (model_ok && lk_db_live_sync(self->decide_cache))
        ckey_len = policy_cache_key(ckey, q->key_hash, sizeof q->key_hash, q->model, ip_ok ? ip : NULL);
    if (!lk_db_live_get(self->decide_cache, ckey, ckey_len, &row)) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_bytes(&p, q->key_hash, sizeof q->key_hash);
        lk_db_param_str(&p, model_ok ? q->model : LK_STR_NULL);
        if (ip_ok)
            lk_db_param_cstr(&p, ip);
        else
            lk_db_param_null(&p); /* unknown address: only keys without an allowlist pass */
        lk_db_rc_t rc = lk_db_exec(self->db, "decide", &p, &res);
        if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
        if (PQntuples(res) != 1) { /* unknown keys are not cached */
            refuse(d, LK_ST_UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided.");
            goto cleanup;
        }
        /* cached until the key expires at the latest (an expired key's row is not kept) */
        int64_t ttl_ms = lk_db_live_max_age_ms(self->decide_cache);
        if (!lk_db_is_null(res, 0, C_EXPIRES_IN)) {
            double left_ms = strtod(lk_db_str(res, 0, C_EXPIRES_IN).ptr, NULL) * 1000.0;
            if (left_ms < (double)ttl_ms) ttl_ms = left_ms > 0 ? (int64_t)left_ms : 0;
        }
        if (lk_db_live_put(self->decide_cache, ckey, ckey_len, res, ttl_ms, &row) != 0) {
            ret = lk_worker_error(rep, LK_ST_INTERNAL, "unexpected DECIDE row");
            goto cleanup;
        }
    }
    d->key_id = row.v[C_KEY];
    d->tenant = row.v[C_TENANT];
    d->user = row.v[C_USER];
    d->agent = row.v[C_AGENT];
    d->team = row.v[C_TEAM];
    if (row_bool(&row, C_REVOKED)) {
        refuse(d, LK_ST_UNAUTHORIZED, "key_revoked", "This API key has been revoked.");
    } else if (row_bool(&row, C_EXPIRED)) {
        refuse(d, LK_ST_UNAUTHORIZED, "key_expired", "This API key has expired.");
    } else if (!row_bool(&row, C_IP_OK)) {
        refuse(d, LK_ST_FORBIDDEN, "ip_not_allowed", "This API key may not be used from this address.");
    } else if (!model_ok) {
        refuse(d, LK_ST_NOT_FOUND, "model_not_found",
               "The model does not exist or you do not have access to it.");
    } else if (!row_bool(&row, C_MODEL_OK)) {
        refuse_model(self, d, LK_ST_FORBIDDEN, "model_not_allowed",
                     "This API key is not allowed to use the model `", q->model, "`.");
    } else if (row.null[C_PROV]) {
        refuse_model(self, d, LK_ST_NOT_FOUND, "model_not_found", "The model `", q->model,
                     "` does not exist or you do not have access to it.");
    } else {
        d->status = LK_ST_OK;
        d->decision = LK_DECISION_ALLOW;
        d->provider_id = row.v[C_PROV];
        d->provider_kind = row.v[C_KIND];
        d->base_url = row.v[C_URL];
        d->cred_id = row.v[C_CRED];
        d->upstream_model = row.v[C_UMODEL]; /* the route's, or the model as requested */
        if (!row.null[C_PROV2]) {
            d->provider_id2 = row.v[C_PROV2];
            d->provider_kind2 = row.v[C_KIND2];
            d->base_url2 = row.v[C_URL2];
            d->cred_id2 = row.v[C_CRED2];
            d->upstream_model2 = row.v[C_UMODEL2];
        }
        /* issue 10: scored before the policy runs, so its rules can use it */
        pa_call_begin(self->anom, &self->acall, d->tenant, d->key_id, d->agent, q->model, q->source_ip,
                      q->body, lk_now_ms());
        d->anomaly = lk_str(self->acall.out);
        /* HDP provenance (docs/hdp.md): recorded, never a refusal by itself */
        self->hdp_facts = policy_hdp_check(self, q, d->tenant, &d->hdp);
        if (!row.null[C_POL]) {
            d->policy_id = row.v[C_POL];
            d->policy_version = strtoll(row.v[C_POL_VER].ptr, NULL, 10);
            if (apply_policy(self, req, rep) != 0 && rep->env.type == LK_MSG_ERROR) goto cleanup;
        }
    }
    if (rep->env.type == LK_MSG_ERROR) goto cleanup;
    /* d->hdp stays in self->hdp until the next DECIDE: not kept */
    lk_str_t *keep[] = {&d->key_id,          &d->tenant,         &d->user,       &d->provider_id,
                        &d->provider_kind,   &d->base_url,       &d->cred_id,    &d->upstream_model,
                        &d->provider_id2,    &d->provider_kind2, &d->base_url2,  &d->cred_id2,
                        &d->upstream_model2, &d->agent,          &d->team,       &d->policy_id,
                        &d->rule_id,         &d->message,        &d->error_code, &d->body,
                        &d->anomaly};
    ret = lk_worker_keep(scratch, keep, sizeof keep / sizeof keep[0]);
cleanup:
    pa_call_end(self->anom, &self->acall,
                rep->env.type == LK_MSG_ERROR ? -1 /* not decided: no outcome */
                                              : d->status != LK_ST_OK || d->decision == LK_DECISION_BLOCK ||
                                                    d->decision == LK_DECISION_HOLD,
                d->est_microusd);
    PQclear(res);
    lk_policy_result_clear(&self->result);
    return ret;
}

/* ------------------------------------------------- policy get, settle -- */

static int on_policy_get(policy_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_policy_get_t *q = &req->u.policy_get;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_str(&p, q->policy_id);
    lk_db_param_i64(&p, q->policy_version);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "policy_doc", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int ret;
    if (PQntuples(res) != 1) {
        ret = lk_worker_error(rep, LK_ST_NOT_FOUND, "no such policy version");
    } else {
        rep->u.policy_get_rep.document = lk_db_str(res, 0, 0);
        lk_str_t *keep[] = {&rep->u.policy_get_rep.document};
        ret = lk_worker_keep(scratch, keep, 1);
    }
    PQclear(res);
    return ret;
}

static int on_settle(policy_t *self, const lk_msg_t *req, lk_msg_t *rep)
{
    int64_t cost = -1;
    lk_db_rc_t rc = policy_budget_settle(self->db, req->env.rid, req->u.settle.prompt_tokens,
                                         req->u.settle.completion_tokens, &cost);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    rep->u.settle_rep.microusd = cost;
    return 0;
}

int policy_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    switch (req->env.type) {
    case LK_MSG_DECIDE:
        return on_decide(ctx, req, rep, scratch);
    case LK_MSG_POLICY_GET:
        return on_policy_get(ctx, req, rep, scratch);
    case LK_MSG_SETTLE:
        return on_settle(ctx, req, rep);
    case LK_MSG_ADMIN_REQ:
        return policy_admin_handle(ctx, req, rep, scratch);
    default:
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "policy does not handle this message type");
    }
}
