/*  vault_identity - SSO users and groups provisioned by SCIM 2.0, and the
 *  browser sessions they sign in with (issue 11).
 *
 *  Sessions: the edge verified an OpenID Connect ID token and sends its claims
 *  (`sso.login`); the vault maps them to an active SCIM user of exactly one
 *  tenant, computes the role from the user's groups (LUMKEY_SSO_GROUP_ROLES:
 *  group displayName -> admin | approver | auditor; the strongest wins; none
 *  = no sign-in) and stores a new session: only the keyed BLAKE2b of the
 *  session token (pepper held by the vault), a CSRF token, an absolute
 *  expiry (LUMKEY_SSO_SESSION_TTL_S, 8 h) and an idle timeout
 *  (LUMKEY_SSO_SESSION_IDLE_S, 30 min). ADMIN_AUTH with a session token
 *  (`lks_...`) joins the user row and recomputes the role on every request:
 *  a deactivated or deleted user, or one removed from the role group, is
 *  refused at once (no cache).
 *
 *  SCIM: `scim.users.*` / `scim.groups.*` ops (role scim, tenant-scoped) keep
 *  the resource document the identity provider sent (minus password, id,
 *  meta) plus the columns the vault needs; filters and PATCH come from the
 *  pure vault_identity_scim. Answers and refusals are in SCIM's own shape.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lk_log.h"
#include "lk_worker.h"
#include "vault.h"
#include "vault_admin.h"
#include "vault_identity.h"
#include "vault_identity_scim.h"

#define SESSION_PREFIX "lks_"
#define SESSION_B64    43 /* 32 random bytes, base64url without padding */

static struct {
    int ready;
    char *role_map; /* JSON object text: group displayName -> role */
    long ttl_s, idle_s;
} g_id;

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < lo || n > hi) {
        lk_log_warn("%s is not a number in [%ld, %ld]; using %ld", name, lo, hi, def);
        return def;
    }
    return n;
}

static void identity_init(void)
{
    if (g_id.ready) return;
    g_id.ready = 1;
    g_id.ttl_s = env_long("LUMKEY_SSO_SESSION_TTL_S", 8 * 3600, 60, 7 * 24 * 3600);
    g_id.idle_s = env_long("LUMKEY_SSO_SESSION_IDLE_S", 30 * 60, 30, 7 * 24 * 3600);
    const char *spec = getenv("LUMKEY_SSO_GROUP_ROLES");
    if (!spec) spec = "Lumkey Admins=admin,Lumkey Approvers=approver,Lumkey Auditors=auditor";
    json_t *map = json_object();
    char *dup = strdup(spec), *save = NULL;
    for (char *item = dup ? strtok_r(dup, ",", &save) : NULL; item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(item, '=');
        if (!eq) continue;
        *eq = '\0';
        const char *role = eq + 1;
        while (*item == ' ')
            item++;
        if (strcmp(role, "admin") != 0 && strcmp(role, "approver") != 0 && strcmp(role, "auditor") != 0) {
            lk_log_warn("LUMKEY_SSO_GROUP_ROLES: role of group %s is not admin, approver or auditor; ignored",
                        item);
            continue;
        }
        json_object_set_new(map, item, json_string(role));
    }
    free(dup);
    g_id.role_map = json_dumps(map, JSON_COMPACT);
    json_decref(map);
}

/* The strongest mapped role of user `uid` (SQL), $N = the role map. */
#define ROLE_SQL(uid, n)                                                                                     \
    "(SELECT r.value FROM scim_group_members m JOIN scim_groups g ON g.id = m.group_id "                     \
    "JOIN json_each_text($" n "::text::json) r ON lower(r.key) = lower(g.display_name) "                     \
    "WHERE m.user_id = " uid " ORDER BY CASE r.value WHEN 'admin' THEN 0 WHEN 'approver' THEN 1 ELSE 2 END " \
    "LIMIT 1)"

/* ------------------------------------------------------------- sessions -- */

int vault_identity_is_session(lk_str_t tok)
{
    if (tok.len != strlen(SESSION_PREFIX) + SESSION_B64 || memcmp(tok.ptr, SESSION_PREFIX, 4) != 0) return 0;
    for (size_t i = 4; i < tok.len; i++) {
        char c = tok.ptr[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '_'))
            return 0;
    }
    return 1;
}

int vault_identity_session_auth(vault_t *self, lk_str_t tok, lk_msg_t *rep, lk_buf_t *scratch)
{
    identity_init();
    if (!vault_identity_is_session(tok)) return lk_worker_error(rep, LK_ST_UNAUTHORIZED, "invalid session");
    uint8_t hash[32];
    vault_hash_key(self->keys->pepper, tok.ptr, tok.len, hash);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_bytes(&p, hash, sizeof hash);
    lk_db_param_cstr(&p, g_id.role_map);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_query(
        self->db,
        "UPDATE sso_sessions s SET last_seen_at = now() FROM scim_users u "
        "WHERE s.hash = $1::bytea AND u.id = s.user_id AND u.tenant_id = s.tenant_id AND u.active "
        "AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(secs => s.idle_s) "
        "RETURNING s.id, s.tenant_id, " ROLE_SQL(
            "u.id", "2") ", u.id, u.user_name, u.display_name, u.email, "
                         "s.csrf, (extract(epoch FROM s.expires_at) * 1000)::bigint",
        &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int ret;
    if (PQntuples(res) != 1 || lk_db_is_null(res, 0, 2)) {
        ret = lk_worker_error(rep, LK_ST_UNAUTHORIZED, "invalid session");
        goto cleanup;
    }
    lk_admin_auth_rep_t *a = &rep->u.admin_auth_rep;
    a->session_id = lk_db_str(res, 0, 0);
    a->tenant = lk_db_str(res, 0, 1);
    a->role = lk_db_str(res, 0, 2);
    a->token_id = lk_db_str(res, 0, 3);
    a->user_name = lk_db_str(res, 0, 4);
    a->display_name = lk_db_str(res, 0, 5);
    a->email = lk_db_str(res, 0, 6);
    a->csrf = lk_db_str(res, 0, 7);
    a->expires_ms = lk_db_i64(res, 0, 8);
    a->via = lk_str("session");
    lk_str_t *keep[] = {&a->session_id, &a->tenant,       &a->role,  &a->token_id,
                        &a->user_name,  &a->display_name, &a->email, &a->csrf};
    ret = lk_worker_keep(scratch, keep, sizeof keep / sizeof keep[0]);
cleanup:
    PQclear(res);
    return ret;
}

static int reply_refusal(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *code, const char *msg)
{
    vault_admin_err_t e;
    vault_admin_set_err(&e, st, code, "%s", msg);
    return vault_admin_reply_err(rep, scratch, &e);
}

/* sso.login {sub, email, email_verified?, preferred_username?}: the claims of a verified ID token. */
static int sso_login(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_admin_err_t e;
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body) return vault_admin_reply_err(rep, scratch, &e);
    const char *sub = json_string_value(json_object_get(body, "sub"));
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *pref = json_string_value(json_object_get(body, "preferred_username"));
    if (json_is_false(json_object_get(body, "email_verified"))) email = NULL; /* unverified: not used */
    if (!sub || !*sub) {
        json_decref(body);
        return reply_refusal(rep, scratch, LK_ST_BAD_REQUEST, "invalid_claims",
                             "The ID token has no subject.");
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, sub);
    lk_db_param_cstr(&p, email ? email : "");
    lk_db_param_cstr(&p, pref ? pref : "");
    lk_db_param_cstr(&p, g_id.role_map);
    PGresult *res = NULL;
    /* best match first: externalId = sub, then userName = email / preferred_username, then email */
    lk_db_rc_t rc = lk_db_query(
        self->db,
        "SELECT u.id, u.tenant_id, u.active, " ROLE_SQL(
            "u.id",
            "4") ", u.prio FROM ("
                 "SELECT *, CASE WHEN external_id = $1::text THEN 0 "
                 "WHEN $2::text <> '' AND lower(user_name) = lower($2::text) THEN 1 "
                 "WHEN $3::text <> '' AND lower(user_name) = lower($3::text) THEN 1 ELSE 2 END AS prio "
                 "FROM scim_users WHERE external_id = $1::text OR ($2::text <> '' AND (lower(user_name) = "
                 "lower($2::text) OR lower(email) = lower($2::text))) OR ($3::text <> '' AND "
                 "lower(user_name) = "
                 "lower($3::text))) u ORDER BY u.prio LIMIT 10",
        &p, &res);
    json_decref(body);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    int n = PQntuples(res), ret;
    if (n == 0) {
        ret = reply_refusal(rep, scratch, LK_ST_FORBIDDEN, "unknown_user",
                            "This identity is not provisioned in Lumkey (ask your identity provider's "
                            "administrator to assign you the Lumkey application).");
        goto cleanup;
    }
    /* the best match must be unique, and no other tenant may hold a matching user at all: an identity
     * never lands silently in another tenant than the one it was provisioned in */
    int ambiguous = 0;
    for (int i = 1; i < n; i++)
        if (lk_db_i64(res, i, 4) == lk_db_i64(res, 0, 4) ||
            strcmp(PQgetvalue(res, i, 1), PQgetvalue(res, 0, 1)) != 0)
            ambiguous = 1;
    if (ambiguous) {
        ret = reply_refusal(rep, scratch, LK_ST_FORBIDDEN, "ambiguous_user",
                            "This identity matches more than one Lumkey user; sign-in refused.");
        goto cleanup;
    }
    if (!lk_db_bool(res, 0, 2)) {
        ret =
            reply_refusal(rep, scratch, LK_ST_FORBIDDEN, "user_inactive", "This Lumkey user is deactivated.");
        goto cleanup;
    }
    if (lk_db_is_null(res, 0, 3)) {
        ret =
            reply_refusal(rep, scratch, LK_ST_FORBIDDEN, "no_role",
                          "This user is in no group that maps to a Lumkey role (admin, approver, auditor).");
        goto cleanup;
    }
    char uid[80], tenant[128];
    lk_str_copy(uid, sizeof uid, lk_db_str(res, 0, 0));
    lk_str_copy(tenant, sizeof tenant, lk_db_str(res, 0, 1));
    PQclear(res);
    res = NULL;

    uint8_t raw[32], craw[32], hash[32];
    char token[4 + SESSION_B64 + 2], csrf[SESSION_B64 + 2], sid[32];
    randombytes_buf(raw, sizeof raw);
    randombytes_buf(craw, sizeof craw);
    memcpy(token, SESSION_PREFIX, 4);
    sodium_bin2base64(token + 4, sizeof token - 4, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_bin2base64(csrf, sizeof csrf, craw, sizeof craw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    vault_hash_key(self->keys->pepper, token, strlen(token), hash);
    vault_new_id(sid, "ses_");
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, sid);
    lk_db_param_bytes(&p, hash, sizeof hash);
    lk_db_param_cstr(&p, tenant);
    lk_db_param_cstr(&p, uid);
    lk_db_param_cstr(&p, csrf);
    lk_db_param_i64(&p, g_id.idle_s);
    lk_db_param_i64(&p, g_id.ttl_s);
    lk_db_param_cstr(&p, g_id.role_map);
    rc =
        lk_db_query(self->db,
                    "WITH gc AS (DELETE FROM sso_sessions WHERE expires_at < now() - interval '1 day'), "
                    "s AS (INSERT INTO sso_sessions (id, hash, tenant_id, user_id, csrf, idle_s, expires_at) "
                    "VALUES ($1::text, $2::bytea, $3::text, $4::text, $5::text, $6::bigint, "
                    "now() + make_interval(secs => $7::bigint)) RETURNING expires_at) "
                    "SELECT " TS("s.expires_at") ", u.user_name, u.display_name, u.email, " ROLE_SQL(
                        "u.id", "8") " FROM s, scim_users u WHERE u.id = $4::text",
                    &p, &res);
    sodium_memzero(raw, sizeof raw);
    if (rc != LK_DB_OK || PQntuples(res) != 1) {
        sodium_memzero(token, sizeof token);
        PQclear(res);
        return rc != LK_DB_OK ? vault_admin_reply_db(rep, scratch, rc, "Please retry.") : -1;
    }
    lk_log_info("sso session %s created for user %s (tenant %s)", sid, uid, tenant);
    json_t *out = json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s,s:s,s:s},s:s,s:s}", "session", token, "session_id",
                            sid, "csrf_token", csrf, "expires_at", PQgetvalue(res, 0, 0), "user", "id", uid,
                            "user_name", PQgetvalue(res, 0, 1), "display_name", PQgetvalue(res, 0, 2),
                            "email", PQgetvalue(res, 0, 3), "tenant", tenant, "role", PQgetvalue(res, 0, 4));
    sodium_memzero(token, sizeof token);
    ret = vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
cleanup:
    PQclear(res);
    return ret;
}

/* sso.logout: object id = the session id (from ADMIN_AUTH), tenant-scoped. Idempotent. */
static int sso_logout(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_rc_t rc = lk_db_query(
        self->db, "DELETE FROM sso_sessions WHERE id = $1::text AND tenant_id = $2::text", &p, NULL);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, json_pack("{s:b}", "ok", 1));
}

/* sso.status (role admin): the mapping and lifetimes the vault applies, and counts for the tenant. */
static int sso_status(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_query(
        self->db,
        "SELECT (SELECT count(*) FROM scim_users WHERE tenant_id = $1::text), "
        "(SELECT count(*) FROM scim_users WHERE tenant_id = $1::text AND active), "
        "(SELECT count(*) FROM scim_groups WHERE tenant_id = $1::text), "
        "(SELECT count(*) FROM sso_sessions WHERE tenant_id = $1::text AND expires_at > now() AND "
        "last_seen_at > now() - make_interval(secs => idle_s))",
        &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    json_t *out = json_pack(
        "{s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "group_roles", json_loads(g_id.role_map, 0, NULL), "session_ttl_s",
        (json_int_t)g_id.ttl_s, "session_idle_s", (json_int_t)g_id.idle_s, "users",
        (json_int_t)lk_db_i64(res, 0, 0), "active_users", (json_int_t)lk_db_i64(res, 0, 1), "groups",
        (json_int_t)lk_db_i64(res, 0, 2), "active_sessions", (json_int_t)lk_db_i64(res, 0, 3));
    PQclear(res);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
}

/* sso.users (role admin): who can sign in, with the role their groups give them now. Never a session. */
static json_t *sso_user_row(PGresult *res, int i)
{
    json_t *role = lk_db_is_null(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5));
    return json_pack("{s:s,s:s,s:s,s:s,s:b,s:o,s:I,s:s}", "id", PQgetvalue(res, i, 0), "user_name",
                     PQgetvalue(res, i, 1), "display_name", PQgetvalue(res, i, 2), "email",
                     PQgetvalue(res, i, 3), "active", lk_db_bool(res, i, 4), "role", role, "active_sessions",
                     (json_int_t)lk_db_i64(res, i, 6), "created_at", PQgetvalue(res, i, 7));
}

static int sso_users(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_cstr(&p, g_id.role_map);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_query(
        self->db,
        "SELECT u.id, u.user_name, u.display_name, u.email, u.active, " ROLE_SQL(
            "u.id",
            "2") ", "
                 "(SELECT count(*) FROM sso_sessions s WHERE s.user_id = u.id AND s.expires_at > now() AND "
                 "s.last_seen_at > now() - make_interval(secs => s.idle_s)), " TS(
                     "u.created_at") " "
                                     "FROM scim_users u WHERE u.tenant_id = $1::text ORDER BY "
                                     "lower(u.user_name) LIMIT 1000",
        &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    json_t *list = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(list, sso_user_row(res, i));
    PQclear(res);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, json_pack("{s:o}", "data", list));
}

/* ----------------------------------------------------------------- SCIM -- */

static int scim_error(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, const char *scim_type,
                      const char *detail)
{
    int http = st == LK_ST_BAD_REQUEST ? 400
               : st == LK_ST_NOT_FOUND ? 404
               : st == LK_ST_CONFLICT  ? 409
               : st == LK_ST_FORBIDDEN ? 403
                                       : 500;
    char status[8];
    snprintf(status, sizeof status, "%d", http);
    json_t *b = json_pack("{s:[s],s:s,s:s}", "schemas", SCIM_URN_ERROR, "status", status, "detail", detail);
    if (scim_type) json_object_set_new(b, "scimType", json_string(scim_type));
    return vault_admin_reply_json(rep, scratch, st, b);
}

static int scim_db_error(lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t rc, const char *conflict)
{
    if (rc == LK_DB_CONFLICT) return scim_error(rep, scratch, LK_ST_CONFLICT, "uniqueness", conflict);
    if (rc == LK_DB_BAD_INPUT)
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidValue",
                          "A value was refused by the database.");
    return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
}

static json_t *load_body(lk_str_t text, char *err, size_t cap)
{
    json_error_t je;
    json_t *b = text.len ? json_loadb(text.ptr, text.len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!json_is_object(b)) {
        json_decref(b);
        snprintf(err, cap, "The request body must be a JSON object.");
        return NULL;
    }
    return b;
}

#define USER_COLS                                                                                            \
    "id, resource::text, user_name, external_id, display_name, active, " TS("created_at") ", " TS(           \
        "updated_at") ", version"

static json_t *meta(const char *type, const char *id, PGresult *res, int i, int c_created)
{
    char loc[160], ver[40];
    snprintf(loc, sizeof loc, "/scim/v2/%ss/%s", type, id);
    snprintf(ver, sizeof ver, "W/\"%s\"", PQgetvalue(res, i, c_created + 2));
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "resourceType", type, "created", PQgetvalue(res, i, c_created),
                     "lastModified", PQgetvalue(res, i, c_created + 1), "location", loc, "version", ver);
}

static json_t *user_doc(PGresult *res, int i)
{
    json_t *doc = json_loads(PQgetvalue(res, i, 1), 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    const char *id = PQgetvalue(res, i, 0);
    json_object_set_new(doc, "schemas", json_pack("[s]", SCIM_URN_USER));
    json_object_set_new(doc, "id", json_string(id));
    json_object_set_new(doc, "userName", json_string(PQgetvalue(res, i, 2)));
    if (!lk_db_is_null(res, i, 3)) json_object_set_new(doc, "externalId", json_string(PQgetvalue(res, i, 3)));
    if (PQgetvalue(res, i, 4)[0]) json_object_set_new(doc, "displayName", json_string(PQgetvalue(res, i, 4)));
    json_object_set_new(doc, "active", json_boolean(lk_db_bool(res, i, 5)));
    json_object_set_new(doc, "meta", meta("User", id, res, i, 6));
    return doc;
}

#define GROUP_COLS                                                                                           \
    "g.id, g.display_name, g.external_id, " TS("g.created_at") ", " TS(                                      \
        "g.updated_at") ", g.version, "                                                                      \
                        "COALESCE((SELECT json_agg(json_build_object('value', u.id, 'display', "             \
                        "u.user_name) ORDER BY u.id) "                                                       \
                        "FROM scim_group_members m JOIN scim_users u ON u.id = m.user_id WHERE m.group_id "  \
                        "= g.id)::text, '[]')"

static json_t *group_doc(PGresult *res, int i, int with_members)
{
    const char *id = PQgetvalue(res, i, 0);
    json_t *doc = json_pack("{s:[s],s:s,s:s}", "schemas", SCIM_URN_GROUP, "id", id, "displayName",
                            PQgetvalue(res, i, 1));
    if (!lk_db_is_null(res, i, 2)) json_object_set_new(doc, "externalId", json_string(PQgetvalue(res, i, 2)));
    if (with_members) {
        json_t *m = json_loads(PQgetvalue(res, i, 6), 0, NULL);
        json_object_set_new(doc, "members", json_is_array(m) ? m : json_array());
        if (!json_is_array(m)) json_decref(m);
    }
    json_object_set_new(doc, "meta", meta("Group", id, res, i, 3));
    return doc;
}

/* ---- users */

static int user_fetch(vault_t *self, const lk_admin_req_t *q, PGresult **res)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    return lk_db_query(self->db,
                       "SELECT " USER_COLS " FROM scim_users WHERE id = $1::text AND tenant_id = $2::text",
                       &p, res);
}

/* INSERT (id NULL) or UPDATE of a user from its (derived) document; answers the stored resource. */
static int user_store(vault_t *self, const lk_admin_req_t *q, json_t *doc, int create, lk_msg_t *rep,
                      lk_buf_t *scratch)
{
    char err[300];
    scim_user_t u;
    if (scim_user_derive(doc, &u, err, sizeof err) != 0)
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidValue", err);
    char *text = json_dumps(doc, JSON_COMPACT);
    char id[40];
    if (create) vault_new_id(id, "usr_");
    lk_db_params_t p;
    lk_db_params_init(&p);
    if (create)
        lk_db_param_cstr(&p, id);
    else
        lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_cstr(&p, u.user_name);
    if (u.external_id)
        lk_db_param_cstr(&p, u.external_id);
    else
        lk_db_param_null(&p);
    lk_db_param_cstr(&p, u.display_name);
    lk_db_param_cstr(&p, u.email);
    lk_db_param_cstr(&p, u.active ? "true" : "false");
    lk_db_param_cstr(&p, text ? text : "{}");
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_query(
        self->db,
        create
            ? "INSERT INTO scim_users (id, tenant_id, user_name, external_id, display_name, email, active, "
              "resource) VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, "
              "$7::text::boolean, "
              "$8::text::jsonb) RETURNING " USER_COLS
            : "UPDATE scim_users SET user_name = $3::text, external_id = $4::text, display_name = $5::text, "
              "email = $6::text, active = $7::text::boolean, resource = $8::text::jsonb, updated_at = now(), "
              "version = version + 1 WHERE id = $1::text AND tenant_id = $2::text RETURNING " USER_COLS,
        &p, &res);
    vault_admin_wipe_free(text);
    if (rc != LK_DB_OK) return scim_db_error(rep, scratch, rc, "A user with this userName already exists.");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, "No User with this id.");
    }
    if (!u.active) { /* deactivated: its sessions end now (ADMIN_AUTH would refuse them anyway) */
        lk_db_params_t d;
        lk_db_params_init(&d);
        lk_db_param_cstr(&d, PQgetvalue(res, 0, 0));
        if (lk_db_query(self->db, "DELETE FROM sso_sessions WHERE user_id = $1::text", &d, NULL) != LK_DB_OK)
            lk_log_warn("could not delete the sessions of deactivated user %s", PQgetvalue(res, 0, 0));
    }
    lk_log_info("scim user %s %s (active: %d)", PQgetvalue(res, 0, 0), create ? "created" : "updated",
                u.active);
    json_t *out = user_doc(res, 0);
    PQclear(res);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
}

static int users_get(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    PGresult *res = NULL;
    lk_db_rc_t rc = user_fetch(self, q, &res);
    if (rc != LK_DB_OK) return scim_db_error(rep, scratch, rc, "");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, "No User with this id.");
    }
    json_t *out = user_doc(res, 0);
    PQclear(res);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
}

/* ---- lists */

/* The list query's parameters: {"filter", "startIndex", "count", "excludedAttributes"} (strings, from the
 * URL). */
static int list_args(json_t *args, long *start, long *count, char *err, size_t cap)
{
    const char *s = json_string_value(json_object_get(args, "startIndex"));
    const char *c = json_string_value(json_object_get(args, "count"));
    char *end;
    *start = 1;
    *count = 100;
    if (s && *s) {
        *start = strtol(s, &end, 10);
        if (*end || *start < 1) *start = 1; /* RFC 7644 3.4.2.4: less than 1 is 1 */
    }
    if (c && *c) {
        *count = strtol(c, &end, 10);
        if (*end) {
            snprintf(err, cap, "`count` must be a number.");
            return -1;
        }
        if (*count < 0) *count = 0;
        if (*count > 200) *count = 200;
    }
    return 0;
}

static int do_list(vault_t *self, const lk_admin_req_t *q, int users, lk_msg_t *rep, lk_buf_t *scratch)
{
    char err[300];
    json_t *args = q->json.len ? json_loadb(q->json.ptr, q->json.len, 0, NULL) : json_object();
    if (!json_is_object(args)) {
        json_decref(args);
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidSyntax", "Malformed list query.");
    }
    long start, count;
    if (list_args(args, &start, &count, err, sizeof err) != 0) {
        json_decref(args);
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidValue", err);
    }
    const char *fs = json_string_value(json_object_get(args, "filter"));
    const char *ex = json_string_value(json_object_get(args, "excludedAttributes"));
    int with_members = !(ex && strcasestr(ex, "members"));
    scim_filter_t f = {0};
    if (fs && *fs && scim_filter_parse(fs, strlen(fs), &f, err, sizeof err) != 0) {
        json_decref(args);
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidFilter", err);
    }
    json_decref(args);
    char sql[2048];
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    int n = snprintf(sql, sizeof sql, "SELECT %s, count(*) OVER () FROM %s WHERE %s.tenant_id = $1::text",
                     users ? USER_COLS : GROUP_COLS, users ? "scim_users" : "scim_groups g",
                     users ? "scim_users" : "g");
    for (int i = 0; i < f.n; i++) {
        const scim_cmp_t *c = &f.c[i];
        const char *cond = NULL;
        int arg = i + 2;
        if (c->kind == SCIM_V_STR) {
            if (users && !strcmp(c->attr, "username"))
                cond = "lower(user_name) = lower($%d::text)";
            else if (users && !strcmp(c->attr, "externalid"))
                cond = "external_id = $%d::text";
            else if (users && !strcmp(c->attr, "id"))
                cond = "id = $%d::text";
            else if (users && !strcmp(c->attr, "displayname"))
                cond = "display_name = $%d::text";
            else if (users && (!strcmp(c->attr, "emails.value") || !strcmp(c->attr, "emails")))
                cond = "(lower(email) = lower($%1$d::text) OR EXISTS (SELECT 1 FROM "
                       "jsonb_array_elements(CASE WHEN jsonb_typeof(resource->'emails') = 'array' THEN "
                       "resource->'emails' ELSE '[]' END) e WHERE lower(e->>'value') = lower($%1$d::text)))";
            else if (!users && !strcmp(c->attr, "displayname"))
                cond = "lower(g.display_name) = lower($%d::text)";
            else if (!users && !strcmp(c->attr, "externalid"))
                cond = "g.external_id = $%d::text";
            else if (!users && !strcmp(c->attr, "id"))
                cond = "g.id = $%d::text";
            else if (!users && (!strcmp(c->attr, "members.value") || !strcmp(c->attr, "members")))
                cond = "EXISTS (SELECT 1 FROM scim_group_members m WHERE m.group_id = g.id AND m.user_id = "
                       "$%d::text)";
            if (cond) lk_db_param_cstr(&p, c->str);
        } else if (c->kind == SCIM_V_BOOL && users && !strcmp(c->attr, "active")) {
            cond = "active = $%d::text::boolean";
            lk_db_param_cstr(&p, c->b ? "true" : "false");
        }
        if (!cond)
            return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidFilter",
                              "This attribute cannot be filtered on (supported: userName, externalId, id, "
                              "displayName, emails.value, active; for groups displayName, externalId, id, "
                              "members.value).");
        n += snprintf(sql + n, sizeof sql - (size_t)n, " AND ");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        n += snprintf(sql + n, sizeof sql - (size_t)n, cond, arg);
#pragma GCC diagnostic pop
    }
    lk_db_param_i64(&p, count);
    lk_db_param_i64(&p, start - 1);
    n += snprintf(sql + n, sizeof sql - (size_t)n, " ORDER BY %s LIMIT $%d::bigint OFFSET $%d::bigint",
                  users ? "created_at, id" : "g.created_at, g.id", f.n + 2, f.n + 3);
    if (n <= 0 || (size_t)n >= sizeof sql) return -1;
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_query(self->db, sql, &p, &res);
    if (rc != LK_DB_OK) return scim_db_error(rep, scratch, rc, "");
    int rows = PQntuples(res);
    json_t *list = json_array();
    int64_t total = 0;
    int cc = users ? 9 : 7;
    for (int i = 0; i < rows; i++) {
        json_array_append_new(list, users ? user_doc(res, i) : group_doc(res, i, with_members));
        total = lk_db_i64(res, i, cc);
    }
    PQclear(res);
    if (rows == 0 && start > 1) { /* past the end: count the matches without the page */
        total = -1;
    }
    json_t *out = json_pack("{s:[s],s:I,s:I,s:I,s:o}", "schemas", SCIM_URN_LIST, "totalResults",
                            (json_int_t)(total < 0 ? 0 : total), "startIndex", (json_int_t)start,
                            "itemsPerPage", (json_int_t)rows, "Resources", list);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
}

/* ---- groups */

static int group_fetch(vault_t *self, const lk_admin_req_t *q, PGresult **res)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    return lk_db_query(
        self->db, "SELECT " GROUP_COLS " FROM scim_groups g WHERE g.id = $1::text AND g.tenant_id = $2::text",
        &p, res);
}

/* Creates or replaces a group (name, externalId, members) in one transaction; answers it. */
static int group_store(vault_t *self, const lk_admin_req_t *q, json_t *doc, int create, lk_msg_t *rep,
                       lk_buf_t *scratch)
{
    char err[300], id[40];
    scim_group_t g;
    if (scim_group_derive(doc, &g, err, sizeof err) != 0)
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidValue", err);
    json_t *ids = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(g.members, i, m) json_array_append(ids, json_object_get(m, "value"));
    char *ids_text = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    if (create)
        vault_new_id(id, "grp_");
    else
        lk_str_copy(id, sizeof id, q->object_id);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_begin(self->db);
    if (rc != LK_DB_OK) goto db_fail;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_cstr(&p, g.display_name);
    if (g.external_id)
        lk_db_param_cstr(&p, g.external_id);
    else
        lk_db_param_null(&p);
    rc = lk_db_query(
        self->db,
        create ? "INSERT INTO scim_groups (id, tenant_id, display_name, external_id) VALUES ($1::text, "
                 "$2::text, $3::text, $4::text) RETURNING id"
               : "UPDATE scim_groups SET display_name = $3::text, external_id = $4::text, "
                 "updated_at = now(), version = version + 1 WHERE id = $1::text AND tenant_id = "
                 "$2::text RETURNING id",
        &p, &res);
    if (rc != LK_DB_OK) goto db_fail;
    if (PQntuples(res) != 1) {
        PQclear(res);
        lk_db_rollback(self->db);
        vault_admin_wipe_free(ids_text);
        return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, "No Group with this id.");
    }
    PQclear(res);
    res = NULL;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_cstr(&p, ids_text ? ids_text : "[]");
    rc = lk_db_query(
        self->db,
        "WITH want AS (SELECT u.id FROM scim_users u WHERE u.tenant_id = $2::text AND u.id IN "
        "(SELECT json_array_elements_text($3::text::json))), "
        "del AS (DELETE FROM scim_group_members WHERE group_id = $1::text AND user_id NOT IN "
        "(SELECT id FROM want)), "
        "ins AS (INSERT INTO scim_group_members (group_id, user_id) SELECT $1::text, id FROM want "
        "ON CONFLICT DO NOTHING) "
        "SELECT (SELECT count(*) FROM want), json_array_length($3::text::json)",
        &p, &res);
    if (rc != LK_DB_OK) goto db_fail;
    if (lk_db_i64(res, 0, 0) != lk_db_i64(res, 0, 1)) {
        PQclear(res);
        lk_db_rollback(self->db);
        vault_admin_wipe_free(ids_text);
        return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidValue",
                          "A member is not a User of this tenant.");
    }
    PQclear(res);
    res = NULL;
    vault_admin_wipe_free(ids_text);
    ids_text = NULL;
    rc = lk_db_commit(self->db);
    if (rc != LK_DB_OK) goto db_fail;
    lk_log_info("scim group %s %s", id, create ? "created" : "updated");
    lk_admin_req_t q2 = *q;
    q2.object_id = lk_str(id);
    rc = group_fetch(self, &q2, &res);
    if (rc != LK_DB_OK) return scim_db_error(rep, scratch, rc, "");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, "No Group with this id.");
    }
    json_t *out = group_doc(res, 0, 1);
    PQclear(res);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
db_fail:
    PQclear(res);
    lk_db_rollback(self->db);
    vault_admin_wipe_free(ids_text);
    return scim_db_error(rep, scratch, rc, "A group with this displayName already exists.");
}

static int groups_get(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    PGresult *res = NULL;
    lk_db_rc_t rc = group_fetch(self, q, &res);
    if (rc != LK_DB_OK) return scim_db_error(rep, scratch, rc, "");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, "No Group with this id.");
    }
    json_t *args = q->json.len ? json_loadb(q->json.ptr, q->json.len, 0, NULL) : NULL;
    const char *ex = json_string_value(json_object_get(args, "excludedAttributes"));
    json_t *out = group_doc(res, 0, !(ex && strcasestr(ex, "members")));
    json_decref(args);
    PQclear(res);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
}

/* PUT, PATCH and DELETE work the same on Users and Groups: the stored resource
 * is fetched, rebuilt as a document, changed, validated and stored again, or
 * deleted. */
typedef struct {
    int (*fetch)(vault_t *self, const lk_admin_req_t *q, PGresult **res);
    json_t *(*doc)(PGresult *res, int i);
    int (*store)(vault_t *self, const lk_admin_req_t *q, json_t *doc, int create, lk_msg_t *rep,
                 lk_buf_t *scratch);
    const char *missing;    /* the 404 detail */
    const char *delete_sql; /* $1 id, $2 tenant; RETURNING id */
    const char *name;       /* for the log */
} scim_kind_t;

static json_t *group_doc_full(PGresult *res, int i)
{
    return group_doc(res, i, 1);
}

static const scim_kind_t SCIM_USER = {
    user_fetch,
    user_doc,
    user_store,
    "No User with this id.",
    "DELETE FROM scim_users WHERE id = $1::text AND tenant_id = $2::text RETURNING id",
    "user"};
static const scim_kind_t SCIM_GROUP = {
    group_fetch,
    group_doc_full,
    group_store,
    "No Group with this id.",
    "DELETE FROM scim_groups WHERE id = $1::text AND tenant_id = $2::text RETURNING id",
    "group"};

static int resource_delete(const scim_kind_t *k, vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep,
                           lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_query(self->db, k->delete_sql, &p, &res);
    if (rc != LK_DB_OK) return scim_db_error(rep, scratch, rc, "");
    int n = PQntuples(res);
    PQclear(res);
    if (n != 1) return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, k->missing);
    lk_log_info("scim %s %.*s deleted", k->name, (int)q->object_id.len, q->object_id.ptr);
    return vault_admin_reply_json(rep, scratch, LK_ST_OK, json_object());
}

/* POST (create) and PUT (replace) of a whole resource document. */
static int resource_put(const scim_kind_t *k, vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep,
                        lk_buf_t *scratch, int create)
{
    char err[300];
    json_t *doc = load_body(q->json, err, sizeof err);
    if (!doc) return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidSyntax", err);
    int r = k->store(self, q, doc, create, rep, scratch);
    json_decref(doc);
    return r;
}

static int resource_patch(const scim_kind_t *k, vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep,
                          lk_buf_t *scratch)
{
    char err[300];
    const char *st = NULL;
    json_t *body = load_body(q->json, err, sizeof err);
    if (!body) return scim_error(rep, scratch, LK_ST_BAD_REQUEST, "invalidSyntax", err);
    PGresult *res = NULL;
    lk_db_rc_t rc = (lk_db_rc_t)k->fetch(self, q, &res);
    if (rc != LK_DB_OK) {
        json_decref(body);
        return scim_db_error(rep, scratch, rc, "");
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        json_decref(body);
        return scim_error(rep, scratch, LK_ST_NOT_FOUND, NULL, k->missing);
    }
    json_t *doc = k->doc(res, 0);
    PQclear(res);
    int r;
    if (scim_patch_apply(doc, body, err, sizeof err, &st) != 0)
        r = scim_error(rep, scratch, LK_ST_BAD_REQUEST, st, err);
    else
        r = k->store(self, q, doc, 0, rep, scratch);
    json_decref(doc);
    json_decref(body);
    return r;
}

/* ------------------------------------------------------------- dispatch -- */

int vault_identity_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    identity_init();
    if (lk_str_eq(q->op, "sso.login")) return sso_login(self, q, rep, scratch);
    if (lk_str_eq(q->op, "sso.logout")) return sso_logout(self, q, rep, scratch);
    if (lk_str_eq(q->op, "sso.status") || lk_str_eq(q->op, "sso.users")) {
        if (!lk_str_eq(q->role, "admin"))
            return reply_refusal(rep, scratch, LK_ST_FORBIDDEN, "insufficient_role",
                                 "This operation needs role admin.");
        return lk_str_eq(q->op, "sso.status") ? sso_status(self, q, rep, scratch)
                                              : sso_users(self, q, rep, scratch);
    }
    if (q->op.len > 5 && memcmp(q->op.ptr, "scim.", 5) == 0) {
        if (!lk_str_eq(q->role, "scim"))
            return scim_error(rep, scratch, LK_ST_FORBIDDEN, NULL, "SCIM needs an admin token of role scim.");
        if (lk_str_eq(q->op, "scim.users.create")) return resource_put(&SCIM_USER, self, q, rep, scratch, 1);
        if (lk_str_eq(q->op, "scim.users.list")) return do_list(self, q, 1, rep, scratch);
        if (lk_str_eq(q->op, "scim.users.get")) return users_get(self, q, rep, scratch);
        if (lk_str_eq(q->op, "scim.users.replace")) return resource_put(&SCIM_USER, self, q, rep, scratch, 0);
        if (lk_str_eq(q->op, "scim.users.patch")) return resource_patch(&SCIM_USER, self, q, rep, scratch);
        if (lk_str_eq(q->op, "scim.users.delete")) return resource_delete(&SCIM_USER, self, q, rep, scratch);
        if (lk_str_eq(q->op, "scim.groups.create"))
            return resource_put(&SCIM_GROUP, self, q, rep, scratch, 1);
        if (lk_str_eq(q->op, "scim.groups.list")) return do_list(self, q, 0, rep, scratch);
        if (lk_str_eq(q->op, "scim.groups.get")) return groups_get(self, q, rep, scratch);
        if (lk_str_eq(q->op, "scim.groups.replace"))
            return resource_put(&SCIM_GROUP, self, q, rep, scratch, 0);
        if (lk_str_eq(q->op, "scim.groups.patch")) return resource_patch(&SCIM_GROUP, self, q, rep, scratch);
        if (lk_str_eq(q->op, "scim.groups.delete"))
            return resource_delete(&SCIM_GROUP, self, q, rep, scratch);
    }
    vault_admin_err_t e;
    vault_admin_set_err(&e, LK_ST_NOT_FOUND, "unknown_operation", "The vault has no operation `%.*s`.",
                        (int)(q->op.len > 64 ? 64 : q->op.len), q->op.ptr);
    return vault_admin_reply_err(rep, scratch, &e);
}
