/*  policy_admin - the policies.* admin operations (ADMIN_REQ from the edge).
 *
 *      policies.create       {name, document, default?}     -> 201 the policy, version 1
 *      policies.list                                        -> {data: [...]}
 *      policies.get          (id)                           -> the policy and its current document
 *      policies.update       (id) {document}                -> a new version (the active one from now)
 *      policies.versions     (id)                           -> {data: [version, created_by, created_at,
 * diff]} policies.validate     {document}                     -> {valid: true, rules, answer_rules}
 *      policies.test         {document | policy, request, api?, answer?, context?} -> the decision
 *      policies.set_default  {policy: id | null}            -> the tenant's default policy
 *
 *  `document` is a JSON object or a string holding JSON text (a string keeps
 *  its line numbers for error messages). Nothing invalid is ever stored: a
 *  document is compiled with lk_policy before its version is inserted, and a
 *  refusal names the field path (and line / column for syntax errors).
 *  Versions are immutable; `diff` records, per version, what changed against
 *  the previous one (rules added, removed, changed; settings changed) and
 *  `created_by` the acting admin token, next to the admin.policies.* audit
 *  event the edge records for the same request.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_log.h"
#include "lk_util.h"
#include "lk_worker.h"
#include "policy.h"

#define MAX_DOC  (1024 * 1024)
#define MAX_NAME 128

static const char SQL_CREATE[] =
    "INSERT INTO policies (id, tenant_id, name, current_version) VALUES ($1, $2, $3, 1)";
static const char SQL_VERSION_INSERT[] =
    "INSERT INTO policy_versions (policy_id, version, document, digest, diff, created_by) "
    "VALUES ($1, $2::int, $3, $4, $5::text::jsonb, $6)";
static const char SQL_LIST[] =
    "SELECT p.id, p.name, p.current_version, to_char(p.created_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(p.updated_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "p.id = t.default_policy_id, (SELECT count(*) FROM api_keys k WHERE k.policy_id = p.id AND k.revoked_at "
    "IS NULL) "
    "FROM policies p JOIN tenants t ON t.id = p.tenant_id WHERE p.tenant_id = $1 ORDER BY p.created_at, p.id";
static const char SQL_GET[] =
    "SELECT p.id, p.name, p.current_version, to_char(p.created_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(p.updated_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "p.id = t.default_policy_id, (SELECT count(*) FROM api_keys k WHERE k.policy_id = p.id AND k.revoked_at "
    "IS NULL), "
    "v.document, v.digest FROM policies p JOIN tenants t ON t.id = p.tenant_id "
    "JOIN policy_versions v ON v.policy_id = p.id AND v.version = p.current_version "
    "WHERE p.tenant_id = $1 AND p.id = $2";
/* Locks the policy row: concurrent updates get consecutive versions. */
static const char SQL_LOCK[] =
    "SELECT p.current_version, v.document FROM policies p JOIN policy_versions v ON v.policy_id = p.id AND "
    "v.version = p.current_version WHERE p.tenant_id = $1 AND p.id = $2 FOR UPDATE OF p";
static const char SQL_BUMP[] =
    "UPDATE policies SET current_version = $2::int, updated_at = now() WHERE id = $1";
static const char SQL_VERSIONS[] =
    "SELECT v.version, v.digest, v.created_by, to_char(v.created_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), v.diff::text FROM policy_versions v JOIN policies p ON p.id = "
    "v.policy_id "
    "WHERE p.tenant_id = $1 AND p.id = $2 ORDER BY v.version DESC";
static const char SQL_SET_DEFAULT[] =
    "UPDATE tenants t SET default_policy_id = $2 WHERE t.id = $1 AND "
    "($2::text IS NULL OR EXISTS (SELECT 1 FROM policies p WHERE p.id = $2 AND p.tenant_id = $1))";
static const char SQL_CURRENT_DOC[] =
    "SELECT v.document, p.current_version FROM policies p JOIN policy_versions v ON v.policy_id = p.id AND "
    "v.version = p.current_version WHERE p.tenant_id = $1 AND p.id = $2";

int policy_admin_prepare(lk_db_t *db)
{
    return lk_db_prepare(db, "pa_create", SQL_CREATE) != 0 ||
                   lk_db_prepare(db, "pa_version_insert", SQL_VERSION_INSERT) != 0 ||
                   lk_db_prepare(db, "pa_list", SQL_LIST) != 0 || lk_db_prepare(db, "pa_get", SQL_GET) != 0 ||
                   lk_db_prepare(db, "pa_lock", SQL_LOCK) != 0 ||
                   lk_db_prepare(db, "pa_bump", SQL_BUMP) != 0 ||
                   lk_db_prepare(db, "pa_versions", SQL_VERSIONS) != 0 ||
                   lk_db_prepare(db, "pa_set_default", SQL_SET_DEFAULT) != 0 ||
                   lk_db_prepare(db, "pa_current_doc", SQL_CURRENT_DOC) != 0
               ? -1
               : 0;
}

/* ------------------------------------------------------------- answers -- */

static int reply_json(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, json_t *body)
{
    int rc = -1;
    if (!body) return -1;
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!text) return -1;
    size_t n = strlen(text);
    lk_buf_reset(scratch);
    if (lk_buf_append(scratch, text, n) == 0) {
        rep->u.admin_rep.status = st;
        rep->u.admin_rep.json = (lk_str_t){(const char *)scratch->data, n};
        rc = 0;
    }
    free(text);
    return rc;
}

/* A refusal {"error": {message, type, code[, param, line, column]}}. */
static int reply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int vreply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code, const char *param,
                      const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));
static int vreply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code, const char *param,
                      const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *type =
        st == LK_ST_INTERNAL || st == LK_ST_UNAVAILABLE ? "api_error" : "invalid_request_error";
    return reply_json(rep, scratch, st,
                      json_pack("{s:{s:s,s:s,s:s,s:s?}}", "error", "message", msg, "type", type, "code", code,
                                "param", param));
}

static int reply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vreply_err(rep, scratch, st, code, NULL, fmt, ap);
    va_end(ap);
    return r;
}

static int reply_invalid_policy(lk_msg_t *rep, lk_buf_t *scratch, const lk_policy_error_t *err,
                                const char *where)
{
    char msg[600];
    if (err->line > 0)
        snprintf(msg, sizeof msg, "The policy%s is not valid JSON at line %d, column %d: %s", where,
                 err->line, err->column, err->msg);
    else
        snprintf(msg, sizeof msg, "The policy%s is not valid: `%s`: %s", where,
                 err->path[0] ? err->path : "(document)", err->msg);
    json_t *e = json_pack("{s:s,s:s,s:s,s:s}", "message", msg, "type", "invalid_request_error", "code",
                          "invalid_policy", "param", err->path);
    if (e && err->line > 0) {
        json_object_set_new(e, "line", json_integer(err->line));
        json_object_set_new(e, "column", json_integer(err->column));
    }
    return reply_json(rep, scratch, LK_ST_BAD_REQUEST, e ? json_pack("{s:o}", "error", e) : NULL);
}

static int reply_db(lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t rc, const char *conflict)
{
    if (rc == LK_DB_CONFLICT)
        return reply_err(rep, scratch, LK_ST_CONFLICT, "already_exists", "%s", conflict);
    if (rc == LK_DB_BAD_INPUT)
        return reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_value",
                         "A value in the request was refused by the database.");
    return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
}

static json_t *load_body(lk_str_t text, lk_msg_t *rep, lk_buf_t *scratch, int *answered)
{
    json_error_t jerr;
    json_t *body = text.len ? json_loadb(text.ptr, text.len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!body || !json_is_object(body)) {
        json_decref(body);
        *answered =
            text.len == 0
                ? reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_json",
                            "A JSON object body is required.")
                : reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_json",
                            "The request body is not a JSON object (line %d, column %d), or repeats a field.",
                            jerr.line, jerr.column);
        return NULL;
    }
    return body;
}

static int check_fields(json_t *body, const char *const *allowed, lk_msg_t *rep, lk_buf_t *scratch,
                        int *answered)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        (void)v;
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            *answered =
                reply_err(rep, scratch, LK_ST_BAD_REQUEST, "unknown_field", "Unknown field `%.64s`.", k);
            return -1;
        }
    }
    return 0;
}

/* The document as text: a string as given, an object dumped with 2-space indent. NULL if absent/wrong. */
static char *document_text(json_t *body, const char *field)
{
    json_t *d = json_object_get(body, field);
    if (json_is_string(d)) return strndup(json_string_value(d), json_string_length(d));
    if (json_is_object(d)) return json_dumps(d, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    return NULL;
}

/* Compiles the body's document. Returns the text (malloc'd) and *pol, or NULL after answering. */
static char *take_document(json_t *body, lk_policy_t **pol, lk_msg_t *rep, lk_buf_t *scratch, int *answered)
{
    char *text = document_text(body, "document");
    if (!text) {
        *answered = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "missing_field",
                              "The field `document` is required: a policy as a JSON object or as JSON text.");
        return NULL;
    }
    size_t n = strlen(text);
    if (n > MAX_DOC) {
        free(text);
        *answered = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_policy",
                              "The policy is larger than %d bytes.", MAX_DOC);
        return NULL;
    }
    lk_policy_error_t err;
    memset(&err, 0, sizeof err);
    *pol = lk_policy_compile(text, n, &err);
    if (!*pol) {
        free(text);
        *answered = reply_invalid_policy(rep, scratch, &err, "");
        return NULL;
    }
    return text;
}

static void digest_hex(const char *text, char out[65])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const uint8_t *)text, strlen(text));
    lk_hex(out, h, sizeof h);
}

static void new_id(char *out)
{
    static const char B62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    memcpy(out, "pol_", 4);
    for (int i = 0; i < 20; i++)
        out[4 + i] = B62[randombytes_uniform(62)];
    out[24] = '\0';
}

/* What changed from old to new (both document texts): {"rules_added": [...], "rules_removed": [...],
 * "rules_changed": [...], "settings_changed": [...]}. Compact JSON, malloc'd. */
static char *diff_of(const char *old_text, const char *new_text)
{
    json_t *o = old_text ? json_loads(old_text, 0, NULL) : NULL, *n = json_loads(new_text, 0, NULL);
    json_t *added = json_array(), *removed = json_array(), *changed = json_array(), *settings = json_array();
    json_t *orules = json_object_get(o, "rules"), *nrules = json_object_get(n, "rules");
    size_t i, j;
    json_t *r, *q;
    json_array_foreach(nrules, i, r)
    {
        json_t *id = json_object_get(r, "id"), *match = NULL;
        json_array_foreach(orules, j, q) if (json_equal(json_object_get(q, "id"), id)) match = q;
        if (!match)
            json_array_append(added, id);
        else if (!json_equal(match, r))
            json_array_append(changed, id);
    }
    json_array_foreach(orules, i, q)
    {
        json_t *id = json_object_get(q, "id"), *match = NULL;
        json_array_foreach(nrules, j, r) if (json_equal(json_object_get(r, "id"), id)) match = r;
        if (!match) json_array_append(removed, id);
    }
    const char *k;
    json_t *v;
    json_object_foreach(n, k, v) if (strcmp(k, "rules") != 0 && !json_equal(v, json_object_get(o, k)))
        json_array_append_new(settings, json_string(k));
    json_object_foreach(o, k, v) if (strcmp(k, "rules") != 0 && !json_object_get(n, k))
        json_array_append_new(settings, json_string(k));
    json_t *d = json_pack("{s:o,s:o,s:o,s:o}", "rules_added", added, "rules_removed", removed,
                          "rules_changed", changed, "settings_changed", settings);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    json_decref(o);
    json_decref(n);
    return text;
}

/* ------------------------------------------------------------- the ops -- */

static json_t *policy_row(PGresult *res, int i)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:b,s:I}", "id", PQgetvalue(res, i, 0), "name",
                     PQgetvalue(res, i, 1), "version", (json_int_t)lk_db_i64(res, i, 2), "created_at",
                     PQgetvalue(res, i, 3), "updated_at", PQgetvalue(res, i, 4), "default",
                     lk_db_bool(res, i, 5), "keys", (json_int_t)lk_db_i64(res, i, 6));
}

static lk_db_rc_t insert_version(lk_db_t *db, const char *id, int64_t version, const char *text,
                                 const char *diff, lk_str_t actor)
{
    char dig[65];
    digest_hex(text, dig);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    lk_db_param_i64(&p, version);
    lk_db_param_cstr(&p, text);
    lk_db_param_cstr(&p, dig);
    lk_db_param_cstr(&p, diff ? diff : "{}");
    lk_db_param_str(&p, actor);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(db, "pa_version_insert", &p, &res);
    PQclear(res);
    return rc;
}

static lk_db_rc_t set_default(lk_db_t *db, lk_str_t tenant, const char *id, int *found)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, tenant);
    if (id)
        lk_db_param_cstr(&p, id);
    else
        lk_db_param_null(&p);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(db, "pa_set_default", &p, &res);
    if (rc == LK_DB_OK) *found = atoi(PQcmdTuples(res)) == 1;
    PQclear(res);
    return rc;
}

static int answer_get(policy_t *self, lk_str_t tenant, lk_str_t id, lk_status_t st, lk_msg_t *rep,
                      lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, tenant);
    lk_db_param_str(&p, id);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "pa_get", &p, &res);
    if (rc != LK_DB_OK) return reply_db(rep, scratch, rc, "");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No policy with this id.");
    }
    json_t *row = policy_row(res, 0);
    json_t *doc = json_loads(PQgetvalue(res, 0, 7), JSON_DECODE_ANY, NULL);
    if (row) {
        json_object_set_new(row, "document", doc ? doc : json_string(PQgetvalue(res, 0, 7)));
        json_object_set_new(row, "digest", json_string(PQgetvalue(res, 0, 8)));
    } else {
        json_decref(doc);
    }
    PQclear(res);
    return reply_json(rep, scratch, st, row);
}

static int op_create(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const FIELDS[] = {"name", "document", "default", NULL};
    int answered = 0;
    json_t *body = load_body(q->json, rep, scratch, &answered);
    if (!body) return answered;
    if (check_fields(body, FIELDS, rep, scratch, &answered) != 0) goto out;
    json_t *name = json_object_get(body, "name");
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > MAX_NAME ||
        strlen(json_string_value(name)) != json_string_length(name)) {
        answered = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_field",
                             "The field `name` must be a non-empty string of at most %d bytes.", MAX_NAME);
        goto out;
    }
    json_t *dflt = json_object_get(body, "default");
    if (dflt && !json_is_boolean(dflt)) {
        answered = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_field",
                             "The field `default` must be a boolean.");
        goto out;
    }
    lk_policy_t *pol = NULL;
    char *text = take_document(body, &pol, rep, scratch, &answered);
    if (!text) goto out;
    lk_policy_free(&pol);
    char id[32];
    new_id(id);
    lk_db_rc_t rc = lk_db_begin(self->db);
    if (rc == LK_DB_OK) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, id);
        lk_db_param_str(&p, q->tenant);
        lk_db_param_cstr(&p, json_string_value(name));
        PGresult *res = NULL;
        rc = lk_db_exec(self->db, "pa_create", &p, &res);
        PQclear(res);
    }
    char *diff = rc == LK_DB_OK ? diff_of(NULL, text) : NULL;
    if (rc == LK_DB_OK) rc = insert_version(self->db, id, 1, text, diff, q->actor);
    int found = 1;
    if (rc == LK_DB_OK && json_is_true(dflt)) rc = set_default(self->db, q->tenant, id, &found);
    if (rc == LK_DB_OK)
        rc = lk_db_commit(self->db);
    else
        lk_db_rollback(self->db);
    free(diff);
    free(text);
    if (rc != LK_DB_OK) {
        answered = reply_db(rep, scratch, rc, "A policy with this name already exists.");
        goto out;
    }
    answered = answer_get(self, q->tenant, lk_str(id), LK_ST_OK, rep, scratch);
out:
    json_decref(body);
    return answered;
}

static int need_id(const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch, int *answered)
{
    int ok =
        q->object_id.len > 4 && q->object_id.len < POLICY_ID_MAX && memcmp(q->object_id.ptr, "pol_", 4) == 0;
    if (!ok) *answered = reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No policy with this id.");
    return ok ? 0 : -1;
}

static int op_update(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const FIELDS[] = {"document", NULL};
    int answered = 0;
    if (need_id(q, rep, scratch, &answered) != 0) return answered;
    json_t *body = load_body(q->json, rep, scratch, &answered);
    if (!body) return answered;
    if (check_fields(body, FIELDS, rep, scratch, &answered) != 0) goto out;
    lk_policy_t *pol = NULL;
    char *text = take_document(body, &pol, rep, scratch, &answered);
    if (!text) goto out;
    lk_policy_free(&pol);
    lk_db_rc_t rc = lk_db_begin(self->db);
    PGresult *res = NULL;
    int64_t version = 0;
    char *diff = NULL;
    if (rc == LK_DB_OK) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_str(&p, q->tenant);
        lk_db_param_str(&p, q->object_id);
        rc = lk_db_exec(self->db, "pa_lock", &p, &res);
    }
    if (rc == LK_DB_OK && PQntuples(res) != 1) {
        PQclear(res);
        lk_db_rollback(self->db);
        free(text);
        answered = reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No policy with this id.");
        goto out;
    }
    if (rc == LK_DB_OK) {
        version = lk_db_i64(res, 0, 0) + 1;
        diff = diff_of(PQgetvalue(res, 0, 1), text);
    }
    PQclear(res);
    char id[POLICY_ID_MAX];
    lk_str_copy(id, sizeof id, q->object_id);
    if (rc == LK_DB_OK) rc = insert_version(self->db, id, version, text, diff, q->actor);
    if (rc == LK_DB_OK) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, id);
        lk_db_param_i64(&p, version);
        res = NULL;
        rc = lk_db_exec(self->db, "pa_bump", &p, &res);
        PQclear(res);
    }
    if (rc == LK_DB_OK)
        rc = lk_db_commit(self->db);
    else
        lk_db_rollback(self->db);
    free(diff);
    free(text);
    if (rc != LK_DB_OK) {
        answered = reply_db(rep, scratch, rc, "This policy was changed at the same time; try again.");
        goto out;
    }
    lk_log(LK_LOG_INFO, NULL, "policy %s is now at version %lld", id, (long long)version);
    answered = answer_get(self, q->tenant, q->object_id, LK_ST_OK, rep, scratch);
out:
    json_decref(body);
    return answered;
}

static int op_list(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "pa_list", &p, &res);
    if (rc != LK_DB_OK) return reply_db(rep, scratch, rc, "");
    json_t *data = json_array();
    for (int i = 0; data && i < PQntuples(res); i++)
        if (json_array_append_new(data, policy_row(res, i)) != 0) {
            json_decref(data);
            data = NULL;
        }
    PQclear(res);
    return data ? reply_json(rep, scratch, LK_ST_OK, json_pack("{s:o}", "data", data)) : -1;
}

static int op_versions(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    int answered = 0;
    if (need_id(q, rep, scratch, &answered) != 0) return answered;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_str(&p, q->object_id);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "pa_versions", &p, &res);
    if (rc != LK_DB_OK) return reply_db(rep, scratch, rc, "");
    if (PQntuples(res) == 0) {
        PQclear(res);
        return reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No policy with this id.");
    }
    json_t *data = json_array();
    for (int i = 0; data && i < PQntuples(res); i++) {
        json_t *diff = json_loads(PQgetvalue(res, i, 4), 0, NULL);
        json_t *row = json_pack("{s:I,s:s,s:s,s:s,s:o}", "version", (json_int_t)lk_db_i64(res, i, 0),
                                "digest", PQgetvalue(res, i, 1), "created_by", PQgetvalue(res, i, 2),
                                "created_at", PQgetvalue(res, i, 3), "diff", diff ? diff : json_object());
        if (!row || json_array_append_new(data, row) != 0) {
            json_decref(data);
            data = NULL;
        }
    }
    PQclear(res);
    return data ? reply_json(rep, scratch, LK_ST_OK, json_pack("{s:o}", "data", data)) : -1;
}

static int op_validate(const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const FIELDS[] = {"document", NULL};
    int answered = 0;
    json_t *body = load_body(q->json, rep, scratch, &answered);
    if (!body) return answered;
    if (check_fields(body, FIELDS, rep, scratch, &answered) == 0) {
        lk_policy_t *pol = NULL;
        char *text = take_document(body, &pol, rep, scratch, &answered);
        if (text) {
            answered = reply_json(
                rep, scratch, LK_ST_OK,
                json_pack("{s:b,s:b}", "valid", 1, "answer_rules", lk_policy_has_answer_rules(pol)));
            lk_policy_free(&pol);
            free(text);
        }
    }
    json_decref(body);
    return answered;
}

static int parse_api(json_t *v, lk_api_t *out)
{
    *out = LK_API_CHAT;
    if (!v) return 0;
    *out = json_is_string(v) ? lk_policy_api_of(json_string_value(v)) : 0;
    return *out ? 0 : -1;
}

static int op_test(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const FIELDS[] = {"document", "policy", "request", "answer", "api", "context", NULL};
    int answered = 0;
    json_t *body = load_body(q->json, rep, scratch, &answered);
    if (!body) return answered;
    lk_policy_t *own = NULL;
    const lk_policy_t *pol = NULL;
    char *text = NULL;
    json_t *out = NULL;
    if (check_fields(body, FIELDS, rep, scratch, &answered) != 0) goto done;
    lk_api_t api;
    if (parse_api(json_object_get(body, "api"), &api) != 0) {
        answered =
            reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_field",
                      "The field `api` must be one of chat.completions, messages, responses, embeddings.");
        goto done;
    }
    json_t *request = json_object_get(body, "request"), *answer = json_object_get(body, "answer");
    if (!json_is_object(request) && !json_is_object(answer)) {
        answered = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "missing_field",
                             "The field `request` (or `answer`) is required: the body an agent would send.");
        goto done;
    }
    json_t *polid = json_object_get(body, "policy");
    if (json_object_get(body, "document")) {
        text = take_document(body, &own, rep, scratch, &answered);
        if (!text) goto done;
        pol = own;
    } else if (json_is_string(polid)) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_str(&p, q->tenant);
        lk_db_param_cstr(&p, json_string_value(polid));
        PGresult *res = NULL;
        lk_db_rc_t rc = lk_db_exec(self->db, "pa_current_doc", &p, &res);
        if (rc != LK_DB_OK) {
            answered = reply_db(rep, scratch, rc, "");
            goto done;
        }
        lk_status_t st = LK_ST_NOT_FOUND;
        if (PQntuples(res) == 1)
            pol =
                policy_compiled(self, q->tenant, lk_str(json_string_value(polid)), lk_db_i64(res, 0, 1), &st);
        PQclear(res);
        if (!pol) {
            answered = st == LK_ST_NOT_FOUND
                           ? reply_err(rep, scratch, st, "not_found", "No policy with this id.")
                           : lk_worker_error(rep, st, "policy could not be loaded");
            goto done;
        }
    } else {
        answered =
            reply_err(rep, scratch, LK_ST_BAD_REQUEST, "missing_field",
                      "Give either `document` (a policy to try) or `policy` (the id of a stored one).");
        goto done;
    }
    const char *hdr[LK_POLICY_CTX_MAX_HEADERS][2];
    lk_policy_ctx_t ctx;
    lk_policy_ctx_from_json(json_object_get(body, "context"), api, &ctx, hdr);
    out = json_object();
    lk_policy_result_t r;
    memset(&r, 0, sizeof r);
    const char *which[2] = {"request", "answer"};
    json_t *bodies[2] = {request, answer};
    for (int side = 0; side < 2; side++) {
        if (!json_is_object(bodies[side])) continue;
        char *b = json_dumps(bodies[side], JSON_COMPACT | JSON_PRESERVE_ORDER);
        int rc = b ? (side ? lk_policy_eval_answer(pol, &ctx, b, strlen(b), &r)
                           : lk_policy_eval_request(pol, &ctx, b, strlen(b), &r))
                   : -1;
        free(b);
        if (rc != 0) {
            answered =
                reply_err(rep, scratch, LK_ST_BAD_REQUEST, "invalid_request",
                          "The %s is not valid for %s: %s", which[side], lk_policy_api_name(api), r.message);
            lk_policy_result_clear(&r);
            goto done;
        }
        json_object_set_new(out, which[side], lk_policy_result_json(&r, side));
        lk_policy_result_clear(&r);
    }
    answered = reply_json(rep, scratch, LK_ST_OK, out);
    out = NULL;
done:
    json_decref(out);
    lk_policy_free(&own);
    free(text);
    json_decref(body);
    return answered;
}

static int op_set_default(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const FIELDS[] = {"policy", NULL};
    int answered = 0;
    json_t *body = load_body(q->json, rep, scratch, &answered);
    if (!body) return answered;
    if (check_fields(body, FIELDS, rep, scratch, &answered) == 0) {
        json_t *v = json_object_get(body, "policy");
        if (!v || (!json_is_null(v) && !json_is_string(v))) {
            answered = reply_err(rep, scratch, LK_ST_BAD_REQUEST, "missing_field",
                                 "The field `policy` is required: a policy id, or null for no default.");
        } else {
            int found = 0;
            lk_db_rc_t rc = set_default(self->db, q->tenant, json_string_value(v), &found);
            if (rc != LK_DB_OK)
                answered = reply_db(rep, scratch, rc, "");
            else if (!found)
                answered = reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", "No policy with this id.");
            else
                answered = reply_json(rep, scratch, LK_ST_OK, json_pack("{s:O}", "default_policy", v));
        }
    }
    json_decref(body);
    return answered;
}

int policy_admin_handle(policy_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_admin_req_t *q = &req->u.admin_req;
    if (q->tenant.len == 0) return lk_worker_error(rep, LK_ST_BAD_REQUEST, "admin request without a tenant");
    int answered = 0;
    if (lk_str_eq(q->op, "policies.create")) return op_create(self, q, rep, scratch);
    if (lk_str_eq(q->op, "policies.list")) return op_list(self, q, rep, scratch);
    if (lk_str_eq(q->op, "policies.get"))
        return need_id(q, rep, scratch, &answered)
                   ? answered
                   : answer_get(self, q->tenant, q->object_id, LK_ST_OK, rep, scratch);
    if (lk_str_eq(q->op, "policies.update")) return op_update(self, q, rep, scratch);
    if (lk_str_eq(q->op, "policies.versions")) return op_versions(self, q, rep, scratch);
    if (lk_str_eq(q->op, "policies.validate")) return op_validate(q, rep, scratch);
    if (lk_str_eq(q->op, "policies.test")) return op_test(self, q, rep, scratch);
    if (lk_str_eq(q->op, "policies.set_default")) return op_set_default(self, q, rep, scratch);
    if (q->op.len > 4 && memcmp(q->op.ptr, "hdp.", 4) == 0) return policy_hdp_admin(self, q, rep, scratch);
    return reply_err(rep, scratch, LK_ST_NOT_FOUND, "unknown_operation", "Unknown admin operation.");
}

/* ---------------------------------------------- shared with policy_hdp.c -- */

int policy_admin_reply_json(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, json_t *body)
{
    return reply_json(rep, scratch, st, body);
}

int policy_admin_reply_err(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code,
                           const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vreply_err(rep, scratch, st, code, param, fmt, ap);
    va_end(ap);
    return r;
}

int policy_admin_reply_db(lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t rc, const char *conflict)
{
    return reply_db(rep, scratch, rc, conflict);
}

json_t *policy_admin_load_body(lk_str_t text, lk_msg_t *rep, lk_buf_t *scratch, int *answered)
{
    return load_body(text, rep, scratch, answered);
}

int policy_admin_check_fields(json_t *body, const char *const *allowed, lk_msg_t *rep, lk_buf_t *scratch,
                              int *answered)
{
    return check_fields(body, allowed, rep, scratch, answered);
}
