/*  vault_routes - the routes.* admin operations: model aliases and fallbacks.
 *
 *      routes.create {alias, provider_id, upstream_model?, fallback_provider_id?,
 *                     fallback_upstream_model?}
 *      routes.list
 *      routes.delete  (object id: the route, "rt_...")
 *
 *  A route sends requests for `alias` to provider_id as upstream_model
 *  (default: the alias), and on an upstream 5xx, connection failure or
 *  timeout (before any byte reached the client) to the fallback provider
 *  (fallback_upstream_model defaults to upstream_model). Both providers must
 *  belong to the tenant. Policy reads the table in its DECIDE route query.
 */
#include <stdio.h>
#include <string.h>

#include "lk_log.h"
#include "vault_admin.h"

#define MAX_MODEL 256

static json_t *route_row(PGresult *res, int i)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:s}", "id", PQgetvalue(res, i, 0), "alias",
                     PQgetvalue(res, i, 1), "provider_id", PQgetvalue(res, i, 2), "upstream_model",
                     PQgetvalue(res, i, 3), "fallback_provider_id",
                     lk_db_is_null(res, i, 4) ? json_null() : json_string(PQgetvalue(res, i, 4)),
                     "fallback_upstream_model",
                     lk_db_is_null(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5)),
                     "created_at", PQgetvalue(res, i, 6));
}

static int routes_create(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const allowed[] = {
        "alias", "provider_id", "upstream_model", "fallback_provider_id", "fallback_upstream_model", NULL};
    vault_admin_err_t e;
    const char *alias, *prov, *umodel = NULL, *fb = NULL, *fbmodel = NULL;
    PGresult *res = NULL;
    int ret;
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body || vault_admin_check_fields(body, allowed, &e) != 0 ||
        vault_admin_get_str(body, "alias", 1, MAX_MODEL, &alias, &e) != 0 ||
        vault_admin_get_str(body, "provider_id", 1, 64, &prov, &e) != 0 ||
        vault_admin_get_str(body, "upstream_model", 0, MAX_MODEL, &umodel, &e) != 0 ||
        vault_admin_get_str(body, "fallback_provider_id", 0, 64, &fb, &e) != 0 ||
        vault_admin_get_str(body, "fallback_upstream_model", 0, MAX_MODEL, &fbmodel, &e) != 0)
        goto refuse;
    if (fbmodel && !fb) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                            "`fallback_upstream_model` needs `fallback_provider_id`.");
        goto refuse;
    }
    if (!umodel) umodel = alias;
    if (fb && !fbmodel) fbmodel = umodel;
    char id[32];
    vault_new_id(id, "rt_");
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_cstr(&p, alias);
    lk_db_param_cstr(&p, prov);
    lk_db_param_cstr(&p, umodel);
    if (fb) {
        lk_db_param_cstr(&p, fb);
        lk_db_param_cstr(&p, fbmodel);
    } else {
        lk_db_param_null(&p);
        lk_db_param_null(&p);
    }
    lk_db_rc_t rc = lk_db_exec(self->db, "route_insert", &p, &res);
    if (rc != LK_DB_OK) {
        ret = vault_admin_reply_db(rep, scratch, rc, "A route with this alias already exists.");
        goto cleanup;
    }
    if (PQntuples(res) != 1) {
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No provider with this id.");
        goto refuse;
    }
    lk_log_info("route %s created", id);
    ret = vault_admin_reply_json(rep, scratch, LK_ST_OK, route_row(res, 0));
    goto cleanup;
refuse:
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    PQclear(res);
    json_decref(body);
    return ret;
}

static int routes_delete(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_admin_err_t e;
    if (vault_admin_need_id(q, "rt_", "route", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "route_delete", &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    int n = PQntuples(res);
    json_t *row = n == 1 ? route_row(res, 0) : NULL;
    PQclear(res);
    if (n != 1) {
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No route with this id.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    return row ? vault_admin_reply_json(rep, scratch, LK_ST_OK, row) : -1;
}

#define ROUTE_COLS                                                                                           \
    "id, alias, provider_id, upstream_model, fallback_provider_id, fallback_upstream_model, " TS("created_"  \
                                                                                                 "at")

int vault_routes_prepare(lk_db_t *db)
{
    return lk_db_prepare(
               db, "route_insert",
               "INSERT INTO routes (id, tenant_id, alias, provider_id, upstream_model, "
               "fallback_provider_id, fallback_upstream_model) "
               "SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text "
               "WHERE EXISTS (SELECT 1 FROM providers WHERE id = $4::text AND tenant_id = $2::text) "
               "AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM providers WHERE id = $6::text "
               "AND tenant_id = $2::text)) RETURNING " ROUTE_COLS) |
           lk_db_prepare(db, "route_list",
                         "SELECT " ROUTE_COLS " FROM routes WHERE tenant_id = $1::text ORDER BY alias, id") |
           lk_db_prepare(
               db, "route_delete",
               "DELETE FROM routes WHERE id = $1::text AND tenant_id = $2::text RETURNING " ROUTE_COLS);
}

int vault_routes_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (lk_str_eq(q->op, "routes.create")) return routes_create(self, q, rep, scratch);
    if (lk_str_eq(q->op, "routes.list"))
        return vault_admin_reply_list(self, q, rep, scratch, "route_list", route_row);
    if (lk_str_eq(q->op, "routes.delete")) return routes_delete(self, q, rep, scratch);
    vault_admin_err_t e;
    vault_admin_set_err(&e, LK_ST_NOT_FOUND, "unknown_operation", "The vault has no such routes operation.");
    return vault_admin_reply_err(rep, scratch, &e);
}
