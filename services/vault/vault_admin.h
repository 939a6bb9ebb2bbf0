/*  vault_admin - what the admin operations share: refusals, answers and the
 *  checks of a JSON body (vault_admin.c), used by vault_keys.c.
 *
 *  Refusals are {"error":{"message","type","code"}} in an ADMIN_REP; messages
 *  name fields, never quote a value (it may be a secret). Knows nothing of
 *  sockets or HTTP.
 */
#ifndef VAULT_ADMIN_H
#define VAULT_ADMIN_H

#include <jansson.h>
#include <stdint.h>

#include "lk_buf.h"
#include "lk_db.h"
#include "lk_proto.h"
#include "vault.h"

#define MAX_NAME     200
#define MAX_METADATA 8192
#define TS_FMT       "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"
#define TS(col)      "to_char(" col " AT TIME ZONE 'UTC', " TS_FMT ")"

typedef struct {
    lk_status_t st;
    const char *type;
    const char *code;
    char msg[300];
} vault_admin_err_t;

void vault_admin_set_err(vault_admin_err_t *e, lk_status_t st, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Puts body (taken) into rep as ADMIN_REP {st, json}. 0 / -1. */
int vault_admin_reply_json(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, json_t *body);
int vault_admin_reply_err(lk_msg_t *rep, lk_buf_t *scratch, const vault_admin_err_t *e);
/* A database failure: ERROR for "retry later" / bugs, ADMIN_REP for decided refusals. */
int vault_admin_reply_db(lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t rc, const char *conflict_msg);

/* The request body as a JSON object; NULL with e set. */
json_t *vault_admin_load_body(lk_str_t text, vault_admin_err_t *e);
/* Every field must be in allowed (NULL-terminated); secret-looking ones are refused by name. 0 / -1. */
int vault_admin_check_fields(json_t *body, const char *const *allowed, vault_admin_err_t *e);
/* A string field: absent (and optional) leaves *out NULL. 0 / -1. */
int vault_admin_get_str(json_t *body, const char *name, int required, size_t max, const char **out,
                        vault_admin_err_t *e);
/* models: absent = [] (any). A new array of strings, or NULL with e set. */
json_t *vault_admin_get_models(json_t *body, vault_admin_err_t *e);
/* expires_at: absent/null = never (*has = 0). Unix seconds or RFC 3339, in the future. 0 / -1. */
int vault_admin_get_expiry(json_t *body, int *has, int64_t *at, vault_admin_err_t *e);
/* q->object_id is prefix + alphanumerics; NOT_FOUND ("No <what> with this id.") otherwise. 0 / -1. */
int vault_admin_need_id(const lk_admin_req_t *q, const char *prefix, const char *what, vault_admin_err_t *e);
/* Answers {"data":[...]}: one row(res, i) per row of the tenant-scoped statement stmt ($1 = tenant). */
int vault_admin_reply_list(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch,
                           const char *stmt, json_t *(*row)(PGresult *res, int i));
/* Frees (and wipes) what jansson returned. */
void vault_admin_wipe_free(void *ptr);

/* vault_keys.c: the keys.* operations and their statements. */
int vault_keys_prepare(lk_db_t *db) __attribute__((warn_unused_result));
int vault_keys_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch);
/* vault_keys.c too: the tokens.* operations (admin tokens; statements prepared by vault_keys_prepare). */
int vault_tokens_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch);
/* vault_routes.c: the routes.* operations (model aliases, fallbacks) and their statements. */
int vault_routes_prepare(lk_db_t *db) __attribute__((warn_unused_result));
int vault_routes_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch);

#endif
