/*  vault_keys - the keys.* admin operations (the Lumkey key lifecycle) and
 *  tokens.* (admin tokens, stored like keys: only their keyed hash).
 *
 *      keys.create  {name, user?, env?, models?, expires_at?, metadata?, allowed_ips?, policy?}
 *      keys.list
 *      keys.get     (object id: the key)
 *      keys.update  {name?, user?, models?, expires_at?, metadata?, allowed_ips?, policy? (id or null)}
 *      keys.rotate  {overlap_seconds?: 86400, at most 30 days}
 *      keys.revoke
 *      tokens.create {name, role: admin|approver|auditor}  (the token is shown once)
 *      tokens.list
 *      tokens.revoke (object id: the token; idempotent; never the caller's own: 409)
 *
 *  Only the keyed hash of a key is stored; a new key appears once, in the
 *  answer to keys.create or keys.rotate. Rotation issues a new key with the
 *  same scopes and ends the old one at now + overlap (or its earlier expiry);
 *  revocation sets revoked_at. Policy reads api_keys on every request, so
 *  both take effect at once on every edge. Knows nothing of sockets or HTTP.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdlib.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "lk_key.h"
#include "lk_log.h"
#include "vault.h"
#include "vault_admin.h"

#define MAX_ALLOWED_IPS 64

/* "allowed_ips": an array of IPv4/IPv6 addresses or networks ("10.0.0.0/8").
 * Returns the array text for the database (free with vault_admin_wipe_free) or NULL with *e set
 * (or NULL and no error when absent: *present says which). */
static char *get_allowed_ips(json_t *body, int *present,
                             vault_admin_err_t *e) /* free: vault_admin_wipe_free */
{
    json_t *v = json_object_get(body, "allowed_ips");
    *present = v != NULL;
    if (!v) return NULL;
    if (json_is_null(v)) {
        json_t *none = json_array();
        char *text = none ? json_dumps(none, JSON_COMPACT) : NULL; /* jansson's allocator, like below */
        json_decref(none);
        return text;
    }
    if (!json_is_array(v) || json_array_size(v) > MAX_ALLOWED_IPS) goto bad;
    size_t i;
    json_t *a;
    json_array_foreach(v, i, a)
    {
        const char *t = json_string_value(a);
        if (!t || strlen(t) >= INET6_ADDRSTRLEN + 4) goto bad;
        char addr[INET6_ADDRSTRLEN + 4];
        snprintf(addr, sizeof addr, "%s", t);
        char *slash = strchr(addr, '/');
        long bits = -1;
        if (slash) {
            char *end;
            *slash = '\0';
            bits = strtol(slash + 1, &end, 10);
            if (end == slash + 1 || *end || bits < 0) goto bad;
        }
        unsigned char bin[16];
        int v4 = inet_pton(AF_INET, addr, bin) == 1, v6 = !v4 && inet_pton(AF_INET6, addr, bin) == 1;
        if (!v4 && !v6) goto bad;
        if (bits > (v4 ? 32 : 128)) goto bad;
    }
    return json_dumps(v, JSON_COMPACT);
bad:
    vault_admin_set_err(e, LK_ST_BAD_REQUEST, "invalid_field",
                        "The field `allowed_ips` must be an array of at most %d IP addresses or networks "
                        "(such as 10.0.0.0/8 or 2001:db8::/32).",
                        MAX_ALLOWED_IPS);
    return NULL;
}

/* "policy": absent (*has 0), null (*has 1, *id NULL: detach) or the id of a
 * policy of the caller's tenant (checked). 0 / -1 (e set, or *db_rc set). */
static int get_policy(vault_t *self, const lk_admin_req_t *q, json_t *body, int *has, const char **id,
                      vault_admin_err_t *e, lk_db_rc_t *db_rc)
{
    json_t *v = json_object_get(body, "policy");
    *has = v != NULL;
    *id = NULL;
    *db_rc = LK_DB_OK;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || strncmp(json_string_value(v), "pol_", 4) != 0 || json_string_length(v) > 64) {
        vault_admin_set_err(e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `policy` must be a policy id (pol_...) or null.");
        return -1;
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, json_string_value(v));
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    *db_rc = lk_db_exec(self->db, "key_policy_exists", &p, &res);
    int found = *db_rc == LK_DB_OK && PQntuples(res) == 1;
    PQclear(res);
    if (*db_rc != LK_DB_OK) return -1;
    if (!found) {
        vault_admin_set_err(e, LK_ST_NOT_FOUND, "policy_not_found",
                            "No policy with the id given in `policy`.");
        return -1;
    }
    *id = json_string_value(v);
    return 0;
}

static int keys_create(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const allowed[] = {"name",     "user",        "env",    "models", "expires_at",
                                          "metadata", "allowed_ips", "policy", NULL};
    vault_admin_err_t e;
    json_t *models = NULL;
    char *models_text = NULL, *meta_text = NULL, *key = NULL, *ips_text = NULL;
    int has_ips = 0;
    PGresult *res = NULL;
    int ret = -1, has_exp = 0;
    int64_t exp = 0;
    const char *name, *user, *env;
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body || vault_admin_check_fields(body, allowed, &e) != 0 ||
        vault_admin_get_str(body, "name", 1, MAX_NAME, &name, &e) != 0 ||
        vault_admin_get_str(body, "user", 0, MAX_NAME, &user, &e) != 0 ||
        vault_admin_get_str(body, "env", 0, 8, &env, &e) != 0 ||
        !(models = vault_admin_get_models(body, &e)) || vault_admin_get_expiry(body, &has_exp, &exp, &e) != 0)
        goto refuse;
    ips_text = get_allowed_ips(body, &has_ips, &e);
    if (has_ips && !ips_text) goto refuse;
    int has_policy;
    const char *policy_id;
    lk_db_rc_t prc;
    if (get_policy(self, q, body, &has_policy, &policy_id, &e, &prc) != 0) {
        if (prc != LK_DB_OK) {
            ret = vault_admin_reply_db(rep, scratch, prc, "");
            goto cleanup;
        }
        goto refuse;
    }
    env = env ? env : "live";
    if (strcmp(env, "live") != 0 && strcmp(env, "test") != 0) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field", "The field `env` must be live or test.");
        goto refuse;
    }
    json_t *meta = json_object_get(body, "metadata");
    if (meta && !json_is_null(meta) && !json_is_object(meta)) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `metadata` must be an object.");
        goto refuse;
    }
    json_t *empty = json_object();
    meta_text = json_dumps(meta && json_is_object(meta) ? meta : empty, JSON_COMPACT);
    json_decref(empty);
    if (meta_text && strlen(meta_text) > MAX_METADATA) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `metadata` is larger than %d bytes.", MAX_METADATA);
        goto refuse;
    }
    models_text = json_dumps(models, JSON_COMPACT);
    key = sodium_malloc(LK_KEY_MAX_LEN);
    if (!meta_text || !models_text || !key) goto cleanup;

    char pub[LK_KEY_ID_LEN + 1], key_id[LK_KEY_ID_LEN + 8];
    lk_key_generate(strcmp(env, "test") == 0 ? LK_KEY_TEST : LK_KEY_LIVE, key, pub);
    snprintf(key_id, sizeof key_id, "key_%s", pub);
    uint8_t hash[32];
    vault_hash_key(self->keys->pepper, key, strlen(key), hash);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, key_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_bytes(&p, hash, sizeof hash);
    lk_db_param_cstr(&p, env);
    lk_db_param_cstr(&p, name);
    lk_db_param_cstr(&p, user ? user : "");
    lk_db_param_cstr(&p, meta_text);
    lk_db_param_cstr(&p, models_text);
    if (has_exp)
        lk_db_param_i64(&p, exp);
    else
        lk_db_param_null(&p);
    lk_db_param_cstr(&p, ips_text ? ips_text : "[]");
    if (policy_id)
        lk_db_param_cstr(&p, policy_id);
    else
        lk_db_param_null(&p);
    lk_db_rc_t rc = lk_db_exec(self->db, "key_insert", &p, &res);
    if (rc != LK_DB_OK) {
        ret = vault_admin_reply_db(rep, scratch, rc, "A key with this id already exists; please retry.");
        goto cleanup;
    }
    lk_log_info("key %s created", key_id);
    json_t *meta_out = json_loads(meta_text, 0, NULL);
    json_t *ips_out = json_loads(ips_text ? ips_text : "[]", 0, NULL);
    json_t *out =
        json_pack("{s:s,s:s,s:s,s:s?,s:s,s:O,s:o,s:o,s:s,s:n,s:s,s:o,s:s?}", "id", key_id, "key", key, "name",
                  name, "user", user, "env", env, "models", models, "expires_at",
                  lk_db_is_null(res, 0, 1) ? json_null() : json_string(PQgetvalue(res, 0, 1)), "metadata",
                  meta_out ? meta_out : json_object(), "created_at", PQgetvalue(res, 0, 0), "revoked_at",
                  "status", "active", "allowed_ips", ips_out ? ips_out : json_array(), "policy", policy_id);
    ret = vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
    goto cleanup;
refuse:
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    PQclear(res);
    if (key) sodium_free(key);
    if (models_text) vault_admin_wipe_free(models_text);
    if (meta_text) vault_admin_wipe_free(meta_text);
    vault_admin_wipe_free(ips_text);
    json_decref(models);
    json_decref(body);
    return ret;
}

/* Columns of key_cols: id, name, user_id, env, models, expires_at, metadata,
 * created_at, revoked_at, status. Never the hash. */
// clang-format off
#define KEY_COLS                                                                    \
    "id, name, user_id, env, array_to_json(allowed_models)::text, "                 \
    TS("expires_at") ", metadata::text, " TS("created_at") ", " TS("revoked_at") ", " \
    "CASE WHEN revoked_at IS NOT NULL THEN 'revoked' "                              \
    "WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' "          \
    "ELSE 'active' END, "                                                           \
    "array_to_json(allowed_ips)::text, policy_id"
// clang-format on

static json_t *opt_ts(PGresult *res, int i, int col)
{
    return lk_db_is_null(res, i, col) ? json_null() : json_string(PQgetvalue(res, i, col));
}

/* The public view of one api_keys row (KEY_COLS). NULL when out of memory. */
static json_t *key_row(PGresult *res, int i)
{
    json_t *models = json_loads(PQgetvalue(res, i, 4), 0, NULL);
    json_t *meta = json_loads(PQgetvalue(res, i, 6), 0, NULL);
    json_t *ips = json_loads(PQgetvalue(res, i, 10), 0, NULL);
    lk_str_t user = lk_db_str(res, i, 2);
    return json_pack("{s:s,s:s,s:o,s:s,s:o,s:o,s:o,s:s,s:o,s:s,s:o,s:o}", "id", PQgetvalue(res, i, 0), "name",
                     PQgetvalue(res, i, 1), "user", user.len ? json_string(user.ptr) : json_null(), "env",
                     PQgetvalue(res, i, 3), "models", models ? models : json_array(), "expires_at",
                     opt_ts(res, i, 5), "metadata", meta ? meta : json_object(), "created_at",
                     PQgetvalue(res, i, 7), "revoked_at", opt_ts(res, i, 8), "status", PQgetvalue(res, i, 9),
                     "allowed_ips", ips ? ips : json_array(), "policy",
                     lk_db_is_null(res, i, 11) ? json_null() : json_string(PQgetvalue(res, i, 11)));
}

static int keys_list(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    return vault_admin_reply_list(self, q, rep, scratch, "key_list", key_row);
}

/* Looks one key up. *row NULL (with rc OK) when there is none. */
static lk_db_rc_t key_fetch(vault_t *self, const lk_admin_req_t *q, lk_str_t id, json_t **row)
{
    *row = NULL;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, id);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "key_get", &p, &res);
    if (rc == LK_DB_OK && PQntuples(res) == 1) {
        *row = key_row(res, 0);
        if (!*row) rc = LK_DB_ERROR;
    }
    PQclear(res);
    return rc;
}

/* Answers the key q->object_id (after a change), or NOT_FOUND. */
static int reply_key(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    json_t *row;
    lk_db_rc_t rc = key_fetch(self, q, q->object_id, &row);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    if (!row) {
        vault_admin_err_t e;
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No key with this id.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, row);
}

static int keys_get(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_admin_err_t e;
    if (vault_admin_need_id(q, "key_", "key", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    return reply_key(self, q, rep, scratch);
}

/* An optional body that must be an object of allowed fields: empty = {}. */
static json_t *load_opt_body(lk_str_t text, const char *const *allowed, vault_admin_err_t *e)
{
    json_t *body = text.len ? vault_admin_load_body(text, e) : json_object();
    if (body && vault_admin_check_fields(body, allowed, e) != 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

static int keys_update(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const allowed[] = {"name",     "user",        "models", "expires_at",
                                          "metadata", "allowed_ips", "policy", NULL};
    vault_admin_err_t e;
    json_t *models = NULL;
    char *models_text = NULL, *meta_text = NULL, *ips_text = NULL;
    int has_ips = 0;
    PGresult *res = NULL;
    int ret = -1, has_exp = 0;
    int64_t exp = 0;
    const char *name = NULL, *user = NULL;
    if (vault_admin_need_id(q, "key_", "key", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body || vault_admin_check_fields(body, allowed, &e) != 0 ||
        vault_admin_get_str(body, "name", 0, MAX_NAME, &name, &e) != 0 ||
        vault_admin_get_str(body, "user", 0, MAX_NAME, &user, &e) != 0 ||
        vault_admin_get_expiry(body, &has_exp, &exp, &e) != 0)
        goto refuse;
    if (json_is_null(json_object_get(body, "name"))) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field", "The field `name` cannot be null.");
        goto refuse;
    }
    ips_text = get_allowed_ips(body, &has_ips, &e);
    if (has_ips && !ips_text) goto refuse;
    int has_policy;
    const char *policy_id;
    lk_db_rc_t prc;
    if (get_policy(self, q, body, &has_policy, &policy_id, &e, &prc) != 0) {
        if (prc != LK_DB_OK) {
            ret = vault_admin_reply_db(rep, scratch, prc, "");
            goto cleanup;
        }
        goto refuse;
    }
    if (json_object_get(body, "models")) {
        if (!(models = vault_admin_get_models(body, &e))) goto refuse;
        if (!(models_text = json_dumps(models, JSON_COMPACT))) goto cleanup;
    }
    json_t *meta = json_object_get(body, "metadata");
    if (meta) {
        if (!json_is_object(meta)) {
            vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                                "The field `metadata` must be an object.");
            goto refuse;
        }
        if (!(meta_text = json_dumps(meta, JSON_COMPACT))) goto cleanup;
        if (strlen(meta_text) > MAX_METADATA) {
            vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                                "The field `metadata` is larger than %d bytes.", MAX_METADATA);
            goto refuse;
        }
    }
    json_t *uv = json_object_get(body, "user");
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    if (name)
        lk_db_param_cstr(&p, name);
    else
        lk_db_param_null(&p);
    if (uv)
        lk_db_param_cstr(&p, user ? user : ""); /* null clears the user */
    else
        lk_db_param_null(&p);
    if (models_text)
        lk_db_param_cstr(&p, models_text);
    else
        lk_db_param_null(&p);
    lk_db_param_i64(&p, json_object_get(body, "expires_at") ? 1 : 0); /* null clears the expiry */
    if (has_exp)
        lk_db_param_i64(&p, exp);
    else
        lk_db_param_null(&p);
    if (meta_text)
        lk_db_param_cstr(&p, meta_text);
    else
        lk_db_param_null(&p);
    if (ips_text)
        lk_db_param_cstr(&p, ips_text);
    else
        lk_db_param_null(&p);
    lk_db_param_i64(&p, has_policy);
    if (policy_id)
        lk_db_param_cstr(&p, policy_id);
    else
        lk_db_param_null(&p);
    lk_db_rc_t rc = lk_db_exec(self->db, "key_update", &p, &res);
    if (rc != LK_DB_OK) {
        ret = vault_admin_reply_db(rep, scratch, rc, "");
        goto cleanup;
    }
    if (PQntuples(res) != 1) {
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No key with this id.");
        goto refuse;
    }
    lk_log_info("key %.*s updated", (int)q->object_id.len, q->object_id.ptr);
    ret = reply_key(self, q, rep, scratch);
    goto cleanup;
refuse:
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    PQclear(res);
    vault_admin_wipe_free(ips_text);
    if (models_text) vault_admin_wipe_free(models_text);
    if (meta_text) vault_admin_wipe_free(meta_text);
    json_decref(models);
    json_decref(body);
    return ret;
}

#define MAX_OVERLAP_S (30 * 86400)

static int keys_rotate(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const allowed[] = {"overlap_seconds", NULL};
    vault_admin_err_t e;
    PGresult *res = NULL;
    char *key = NULL;
    int ret = -1;
    int in_tx = 0;
    if (vault_admin_need_id(q, "key_", "key", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    json_t *body = load_opt_body(q->json, allowed, &e);
    if (!body) goto refuse;
    int64_t overlap = 86400;
    json_t *ov = json_object_get(body, "overlap_seconds");
    if (ov && !json_is_null(ov)) {
        if (!json_is_integer(ov) || json_integer_value(ov) < 0 || json_integer_value(ov) > MAX_OVERLAP_S) {
            vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                                "The field `overlap_seconds` must be an integer from 0 to %d (30 days).",
                                MAX_OVERLAP_S);
            goto refuse;
        }
        overlap = (int64_t)json_integer_value(ov);
    }
    lk_db_rc_t rc = lk_db_begin(self->db);
    in_tx = rc == LK_DB_OK;
    lk_db_params_t p;
    if (rc == LK_DB_OK) {
        lk_db_params_init(&p);
        lk_db_param_str(&p, q->object_id);
        lk_db_param_str(&p, q->tenant);
        rc = lk_db_exec(self->db, "key_lock", &p, &res);
    }
    if (rc != LK_DB_OK) goto db_fail;
    if (PQntuples(res) != 1) {
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No key with this id.");
        goto refuse;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "active") != 0) {
        vault_admin_set_err(&e, LK_ST_CONFLICT, "key_not_active",
                            "Only an active key can be rotated; this one is %s.",
                            strcmp(PQgetvalue(res, 0, 1), "revoked") == 0 ? "revoked" : "expired");
        goto refuse;
    }
    int test = strcmp(PQgetvalue(res, 0, 0), "test") == 0;
    PQclear(res);
    res = NULL;
    key = sodium_malloc(LK_KEY_MAX_LEN);
    if (!key) goto cleanup;
    char pub[LK_KEY_ID_LEN + 1], key_id[LK_KEY_ID_LEN + 8];
    lk_key_generate(test ? LK_KEY_TEST : LK_KEY_LIVE, key, pub);
    snprintf(key_id, sizeof key_id, "key_%s", pub);
    uint8_t hash[32];
    vault_hash_key(self->keys->pepper, key, strlen(key), hash);
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, key_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_bytes(&p, hash, sizeof hash);
    lk_db_param_str(&p, q->object_id);
    rc = lk_db_exec(self->db, "key_clone", &p, &res);
    if (rc != LK_DB_OK) goto db_fail;
    PQclear(res);
    res = NULL;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_i64(&p, overlap);
    rc = lk_db_exec(self->db, "key_sunset", &p, &res);
    if (rc == LK_DB_OK && PQntuples(res) != 1) rc = LK_DB_ERROR;
    if (rc == LK_DB_OK) rc = lk_db_commit(self->db);
    if (rc != LK_DB_OK) goto db_fail;
    in_tx = 0;
    json_t *prev =
        json_pack("{s:s%,s:o}", "id", q->object_id.ptr, q->object_id.len, "expires_at", opt_ts(res, 0, 0));
    PQclear(res);
    res = NULL;
    json_t *row;
    rc = key_fetch(self, q, lk_str(key_id), &row);
    if (rc != LK_DB_OK || !row || !prev) {
        json_decref(prev);
        json_decref(row);
        ret = rc != LK_DB_OK ? vault_admin_reply_db(rep, scratch, rc, "") : -1;
        goto cleanup;
    }
    json_object_set_new(row, "key", json_string(key));
    lk_log_info("key %.*s rotated to %s (overlap %lld s)", (int)q->object_id.len, q->object_id.ptr, key_id,
                (long long)overlap);
    ret =
        vault_admin_reply_json(rep, scratch, LK_ST_OK, json_pack("{s:o,s:o}", "key", row, "previous", prev));
    goto cleanup;
db_fail:
    if (in_tx) lk_db_rollback(self->db);
    in_tx = 0;
    ret = vault_admin_reply_db(rep, scratch, rc, "A key with this id already exists; please retry.");
    goto cleanup;
refuse:
    if (in_tx) lk_db_rollback(self->db);
    in_tx = 0;
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    if (in_tx) lk_db_rollback(self->db);
    PQclear(res);
    if (key) sodium_free(key);
    json_decref(body);
    return ret;
}

static int keys_revoke(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_admin_err_t e;
    if (vault_admin_need_id(q, "key_", "key", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    json_t *body = load_opt_body(q->json, (const char *const[]){NULL}, &e);
    if (!body) return vault_admin_reply_err(rep, scratch, &e);
    json_decref(body);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "key_revoke", &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    int found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No key with this id.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    lk_log_info("key %.*s revoked", (int)q->object_id.len, q->object_id.ptr);
    return reply_key(self, q, rep, scratch);
}

/* --------------------------------------------------------------- tokens -- */

/* Columns of TOKEN_COLS: id, name, role, created_at, revoked_at, status. Never the hash. */
#define TOKEN_COLS                                                                                           \
    "id, name, role, " TS("created_at") ", " TS("revoked_at") ", CASE WHEN revoked_at IS NOT NULL THEN "     \
                                                              "'revoked' ELSE 'active' END"

static json_t *token_row(PGresult *res, int i)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s}", "id", PQgetvalue(res, i, 0), "name", PQgetvalue(res, i, 1),
                     "role", PQgetvalue(res, i, 2), "created_at", PQgetvalue(res, i, 3), "revoked_at",
                     opt_ts(res, i, 4), "status", PQgetvalue(res, i, 5));
}

static int tokens_create(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const allowed[] = {"name", "role", NULL};
    vault_admin_err_t e;
    PGresult *res = NULL;
    char *token = NULL;
    int ret = -1;
    const char *name, *role;
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body || vault_admin_check_fields(body, allowed, &e) != 0 ||
        vault_admin_get_str(body, "name", 1, MAX_NAME, &name, &e) != 0 ||
        vault_admin_get_str(body, "role", 1, 16, &role, &e) != 0)
        goto refuse;
    if (strcmp(role, "admin") != 0 && strcmp(role, "approver") != 0 && strcmp(role, "auditor") != 0 &&
        strcmp(role, "scim") != 0) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `role` must be one of admin, approver, auditor, scim.");
        goto refuse;
    }
    token = sodium_malloc(LK_KEY_MAX_LEN);
    if (!token) goto cleanup;
    char pub[LK_KEY_ID_LEN + 1], token_id[LK_KEY_ID_LEN + 8];
    lk_key_generate(LK_KEY_ADMIN, token, pub);
    snprintf(token_id, sizeof token_id, "adm_%s", pub);
    uint8_t hash[32];
    vault_hash_key(self->keys->pepper, token, strlen(token), hash);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, token_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_bytes(&p, hash, sizeof hash);
    lk_db_param_cstr(&p, role);
    lk_db_param_cstr(&p, name);
    lk_db_rc_t rc = lk_db_exec(self->db, "token_insert", &p, &res);
    if (rc != LK_DB_OK) {
        ret = vault_admin_reply_db(rep, scratch, rc, "A token with this id already exists; please retry.");
        goto cleanup;
    }
    lk_log_info("admin token %s (%s) created", token_id, role);
    json_t *out =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:n,s:s}", "id", token_id, "token", token, "name", name, "role", role,
                  "created_at", PQgetvalue(res, 0, 0), "revoked_at", "status", "active");
    ret = vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
    goto cleanup;
refuse:
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    PQclear(res);
    if (token) sodium_free(token);
    json_decref(body);
    return ret;
}

static int tokens_list(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    return vault_admin_reply_list(self, q, rep, scratch, "token_list", token_row);
}

/* Idempotent; the caller's own token is refused (409) so an admin cannot lock
 * themselves out by accident. */
static int tokens_revoke(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_admin_err_t e;
    if (vault_admin_need_id(q, "adm_", "admin token", &e) != 0)
        return vault_admin_reply_err(rep, scratch, &e);
    json_t *body = load_opt_body(q->json, (const char *const[]){NULL}, &e);
    if (!body) return vault_admin_reply_err(rep, scratch, &e);
    json_decref(body);
    if (q->actor.len == q->object_id.len && memcmp(q->actor.ptr, q->object_id.ptr, q->actor.len) == 0) {
        vault_admin_set_err(&e, LK_ST_CONFLICT, "cannot_revoke_own_token",
                            "An admin token cannot revoke itself; use another admin token.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "token_revoke", &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    if (PQntuples(res) != 1) {
        PQclear(res);
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No admin token with this id.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    lk_log_info("admin token %.*s revoked", (int)q->object_id.len, q->object_id.ptr);
    json_t *row = token_row(res, 0);
    PQclear(res);
    return row ? vault_admin_reply_json(rep, scratch, LK_ST_OK, row) : -1;
}

int vault_tokens_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (lk_str_eq(q->op, "tokens.create")) return tokens_create(self, q, rep, scratch);
    if (lk_str_eq(q->op, "tokens.list")) return tokens_list(self, q, rep, scratch);
    if (lk_str_eq(q->op, "tokens.revoke")) return tokens_revoke(self, q, rep, scratch);
    vault_admin_err_t e;
    vault_admin_set_err(&e, LK_ST_NOT_FOUND, "unknown_operation", "The vault has no operation `%.*s`.",
                        (int)(q->op.len > 64 ? 64 : q->op.len), q->op.ptr);
    return vault_admin_reply_err(rep, scratch, &e);
}

/* ------------------------------------------------------------- dispatch -- */

int vault_keys_prepare(lk_db_t *db)
{
    return lk_db_prepare(
               db, "key_insert",
               "INSERT INTO api_keys (id, tenant_id, hash, env, name, user_id, metadata, allowed_models, "
               "expires_at, allowed_ips, policy_id) VALUES ($1::text, $2::text, $3::bytea, $4::text, "
               "$5::text, "
               "$6::text, "
               "$7::text::jsonb, ARRAY(SELECT json_array_elements_text($8::text::json)), "
               "to_timestamp($9::bigint), ARRAY(SELECT json_array_elements_text($10::text::json)::inet), "
               "$11::text) "
               "RETURNING " TS("created_at") ", " TS("expires_at")) |
           lk_db_prepare(db, "key_list",
                         "SELECT " KEY_COLS
                         " FROM api_keys WHERE tenant_id = $1::text ORDER BY created_at, id") |
           lk_db_prepare(db, "key_get",
                         "SELECT " KEY_COLS " FROM api_keys WHERE id = $1::text AND tenant_id = $2::text") |
           lk_db_prepare(
               db, "key_update",
               "UPDATE api_keys SET name = COALESCE($3::text, name), user_id = COALESCE($4::text, user_id), "
               "allowed_models = CASE WHEN $5::text IS NULL THEN allowed_models "
               "ELSE ARRAY(SELECT json_array_elements_text($5::text::json)) END, "
               "expires_at = CASE WHEN $6::bigint = 1 THEN to_timestamp($7::bigint) ELSE expires_at END, "
               "metadata = COALESCE($8::text::jsonb, metadata), "
               "allowed_ips = CASE WHEN $9::text IS NULL THEN allowed_ips "
               "ELSE ARRAY(SELECT json_array_elements_text($9::text::json)::inet) END, "
               "policy_id = CASE WHEN $10::bigint = 1 THEN $11::text ELSE policy_id END "
               "WHERE id = $1::text AND tenant_id = $2::text RETURNING id") |
           lk_db_prepare(db, "key_policy_exists",
                         "SELECT 1 FROM policies WHERE id = $1::text AND tenant_id = $2::text") |
           lk_db_prepare(
               db, "key_lock",
               "SELECT env, CASE WHEN revoked_at IS NOT NULL THEN 'revoked' "
               "WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' ELSE 'active' END "
               "FROM api_keys WHERE id = $1::text AND tenant_id = $2::text FOR UPDATE") |
           lk_db_prepare(
               db, "key_clone",
               "INSERT INTO api_keys (id, tenant_id, hash, env, name, user_id, metadata, allowed_models, "
               "expires_at, allowed_ips, policy_id) SELECT $1::text, tenant_id, $3::bytea, env, name, "
               "user_id, "
               "metadata, "
               "allowed_models, expires_at, allowed_ips, policy_id FROM api_keys WHERE id = $4::text AND "
               "tenant_id = "
               "$2::text") |
           lk_db_prepare(
               db, "key_sunset",
               "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, 'infinity'::timestamptz), "
               "now() + make_interval(secs => $3::bigint)) WHERE id = $1::text AND tenant_id = $2::text "
               "RETURNING " TS("expires_at")) |
           lk_db_prepare(db, "token_insert",
                         "INSERT INTO admin_tokens (id, tenant_id, hash, role, name) VALUES ($1::text, "
                         "$2::text, $3::bytea, $4::text, $5::text) RETURNING " TS("created_at")) |
           lk_db_prepare(db, "token_list",
                         "SELECT " TOKEN_COLS
                         " FROM admin_tokens WHERE tenant_id = $1::text ORDER BY created_at, id") |
           lk_db_prepare(db, "token_revoke",
                         "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, now()) "
                         "WHERE id = $1::text AND tenant_id = $2::text RETURNING " TOKEN_COLS) |
           lk_db_prepare(db, "key_revoke",
                         "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
                         "WHERE id = $1::text AND tenant_id = $2::text RETURNING id");
}

int vault_keys_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (lk_str_eq(q->op, "keys.create")) return keys_create(self, q, rep, scratch);
    if (lk_str_eq(q->op, "keys.list")) return keys_list(self, q, rep, scratch);
    if (lk_str_eq(q->op, "keys.get")) return keys_get(self, q, rep, scratch);
    if (lk_str_eq(q->op, "keys.update")) return keys_update(self, q, rep, scratch);
    if (lk_str_eq(q->op, "keys.rotate")) return keys_rotate(self, q, rep, scratch);
    if (lk_str_eq(q->op, "keys.revoke")) return keys_revoke(self, q, rep, scratch);
    vault_admin_err_t e;
    vault_admin_set_err(&e, LK_ST_NOT_FOUND, "unknown_operation", "The vault has no operation `%.*s`.",
                        (int)(q->op.len > 64 ? 64 : q->op.len), q->op.ptr);
    return vault_admin_reply_err(rep, scratch, &e);
}
