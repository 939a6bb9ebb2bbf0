/*  policy_hdp - HDP (Human Delegation Provenance) in lumkey-policy: verify the
 *  request's HDP-Token against the tenant's trusted issuers, and the
 *  hdp.issuers.* admin operations.
 *
 *  DECIDE: when the request carries `HDP-Token` (or the draft's legacy
 *  `X-HDP-Token`), lk_hdp verifies it (issuer looked up by the token's kid in
 *  hdp_issuers, one indexed query per token-bearing request, so a revocation
 *  applies to the next request) and compares the request's tools with the
 *  token's scope. The result JSON goes into DECIDE_REP `hdp` (the edge copies
 *  it into the audit events); the facts feed the opt-in `hdp` policy
 *  condition. Record-only: nothing here refuses a request.
 *
 *  `HDP-Token-Ref: <token_id>` names a token this worker verified before for
 *  the same tenant (an in-memory store of the last POLICY_HDP_REFS verified
 *  tokens); it is verified again (expiry, revocation). Unknown: unresolved_ref.
 *
 *      hdp.issuers.create  {name, public_key, kid?}  -> 201 the issuer
 *      hdp.issuers.list                              -> {data: [...]}
 *      hdp.issuers.revoke  (id)                      -> the issuer, revoked
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lk_hdp.h"
#include "lk_log.h"
#include "lk_util.h"
#include "lk_worker.h"
#include "policy.h"

#define POLICY_HDP_REFS 64
#define MAX_TOOL_NAMES  64
#define ISSUER_NAME_MAX 128
#define ISSUER_KID_MAX  128
#define ISO_TS(col)     "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* $1 tenant, $2 kid: the active issuer of kid, else its newest revoked one. */
static const char SQL_ISSUER[] = "SELECT name, public_key, revoked_at IS NOT NULL FROM hdp_issuers "
                                 "WHERE tenant_id = $1 AND kid = $2 "
                                 "ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT 1";
static const char SQL_CREATE[] = "INSERT INTO hdp_issuers (id, tenant_id, kid, name, public_key, created_by) "
                                 "VALUES ($1, $2, $3, $4, $5::bytea, $6) RETURNING " ISO_TS("created_at");
#define ISSUER_COLS "id, kid, name, public_key, created_by, " ISO_TS("created_at") ", " ISO_TS("revoked_at")
static const char SQL_LIST[] =
    "SELECT " ISSUER_COLS " FROM hdp_issuers WHERE tenant_id = $1 ORDER BY created_at, id";
static const char SQL_REVOKE[] = "UPDATE hdp_issuers SET revoked_at = COALESCE(revoked_at, now()) "
                                 "WHERE tenant_id = $1 AND id = $2 RETURNING " ISSUER_COLS;

struct policy_hdp {
    struct {
        char tenant[POLICY_ID_MAX];
        char token_id[72];
        json_t *token;
        uint64_t used;
    } refs[POLICY_HDP_REFS];
    uint64_t tick;
    char *json; /* the current DECIDE's result text */
    lk_policy_hdp_t facts;
    char reason[32];
};

int policy_hdp_prepare(lk_db_t *db)
{
    return lk_db_prepare(db, "hdp_issuer", SQL_ISSUER) != 0 ||
                   lk_db_prepare(db, "hdp_create", SQL_CREATE) != 0 ||
                   lk_db_prepare(db, "hdp_list", SQL_LIST) != 0 ||
                   lk_db_prepare(db, "hdp_revoke", SQL_REVOKE) != 0
               ? -1
               : 0;
}

policy_hdp_t *policy_hdp_new(void)
{
    return calloc(1, sizeof(policy_hdp_t));
}

void policy_hdp_destroy(policy_hdp_t **h_p)
{
    if (!h_p || !*h_p) return;
    for (int i = 0; i < POLICY_HDP_REFS; i++)
        json_decref((*h_p)->refs[i].token);
    free((*h_p)->json);
    free(*h_p);
    *h_p = NULL;
}

/* ------------------------------------------------------------- DECIDE -- */

typedef struct {
    policy_t *self;
    lk_str_t tenant;
} lookup_ctx_t;

static int issuer_lookup(void *ud, const char *kid, lk_hdp_issuer_t *out)
{
    lookup_ctx_t *l = ud;
    if (strlen(kid) > ISSUER_KID_MAX) return 0;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, l->tenant);
    lk_db_param_cstr(&p, kid);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(l->self->db, "hdp_issuer", &p, &res);
    if (rc != LK_DB_OK) return -1;
    int found = 0;
    size_t n = 0;
    if (PQntuples(res) == 1 && lk_db_bytea(res, 0, 1, out->pk, sizeof out->pk, &n) == 0 && n == 32) {
        lk_str_copy(out->name, sizeof out->name, lk_db_str(res, 0, 0));
        out->revoked = lk_db_bool(res, 0, 2);
        found = 1;
    }
    PQclear(res);
    return found;
}

/* The value of header name (case-insensitive) in "name: value\n" lines; 1 found. */
static int find_header(lk_str_t text, const char *name, lk_str_t *value)
{
    size_t nl = strlen(name);
    const char *s = text.ptr, *end = text.ptr + text.len;
    while (s && s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        const char *le = eol ? eol : end;
        if ((size_t)(le - s) > nl && s[nl] == ':' && strncasecmp(s, name, nl) == 0) {
            const char *v = s + nl + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            *value = (lk_str_t){v, (size_t)(le - v)};
            return 1;
        }
        s = eol ? eol + 1 : NULL;
    }
    return 0;
}

typedef struct {
    char buf[4096];
    size_t used;
    const char *defs[MAX_TOOL_NAMES], *calls[MAX_TOOL_NAMES];
    size_t n_defs, n_calls;
} tools_acc_t;

static void on_tool(void *ud, const char *name, int is_call)
{
    tools_acc_t *t = ud;
    size_t n = strlen(name) + 1;
    if (t->used + n > sizeof t->buf) return;
    if (is_call ? t->n_calls >= MAX_TOOL_NAMES : t->n_defs >= MAX_TOOL_NAMES) return;
    char *c = memcpy(t->buf + t->used, name, n);
    t->used += n;
    if (is_call)
        t->calls[t->n_calls++] = c;
    else
        t->defs[t->n_defs++] = c;
}

static void remember(policy_hdp_t *h, lk_str_t tenant, json_t *tok)
{
    const char *tid = json_string_value(json_object_get(json_object_get(tok, "header"), "token_id"));
    if (!tid || strlen(tid) >= sizeof h->refs[0].token_id || tenant.len >= sizeof h->refs[0].tenant) return;
    int slot = 0;
    for (int i = 0; i < POLICY_HDP_REFS; i++) {
        if (h->refs[i].token && lk_str_eq(tenant, h->refs[i].tenant) && !strcmp(h->refs[i].token_id, tid)) {
            slot = i;
            break;
        }
        if (!h->refs[i].token || h->refs[i].used < h->refs[slot].used) slot = i;
    }
    json_decref(h->refs[slot].token);
    h->refs[slot].token = json_incref(tok);
    lk_str_copy(h->refs[slot].tenant, sizeof h->refs[slot].tenant, tenant);
    snprintf(h->refs[slot].token_id, sizeof h->refs[slot].token_id, "%s", tid);
    h->refs[slot].used = ++h->tick;
}

static json_t *recall(policy_hdp_t *h, lk_str_t tenant, lk_str_t ref)
{
    for (int i = 0; i < POLICY_HDP_REFS; i++)
        if (h->refs[i].token && lk_str_eq(tenant, h->refs[i].tenant) && lk_str_eq(ref, h->refs[i].token_id)) {
            h->refs[i].used = ++h->tick;
            return json_incref(h->refs[i].token);
        }
    return NULL;
}

const lk_policy_hdp_t *policy_hdp_check(policy_t *self, const lk_decide_t *q, lk_str_t tenant, lk_str_t *out)
{
    policy_hdp_t *h = self->hdp;
    *out = LK_STR_NULL;
    free(h->json);
    h->json = NULL;
    lk_str_t tok_v = LK_STR_NULL, ref_v = LK_STR_NULL;
    int has_tok =
        find_header(q->headers, "hdp-token", &tok_v) || find_header(q->headers, "x-hdp-token", &tok_v);
    int has_ref = !has_tok && (find_header(q->headers, "hdp-token-ref", &ref_v) ||
                               find_header(q->headers, "x-hdp-token-ref", &ref_v));
    if (!has_tok && !has_ref) return NULL;

    tools_acc_t *tools = calloc(1, sizeof *tools);
    lk_hdp_tools_t tl = {0};
    if (tools) {
        char ep[32];
        lk_api_t api = lk_policy_api_of(lk_str_copy(ep, sizeof ep, q->endpoint));
        if (lk_policy_request_tools(api ? api : LK_API_CHAT, q->body.ptr, q->body.len, on_tool, tools) == 0)
            tl = (lk_hdp_tools_t){tools->defs, tools->n_defs, tools->calls, tools->n_calls};
    }
    lookup_ctx_t lc = {self, tenant};
    lk_hdp_facts_t f;
    json_t *res = NULL, *tok = NULL;
    lk_hdp_reason_t why = LK_HDP_MALFORMED;
    if (has_tok) {
        tok = lk_hdp_decode(tok_v.ptr, tok_v.len, &why);
    } else {
        tok = recall(h, tenant, ref_v);
        why = LK_HDP_UNRESOLVED_REF;
    }
    if (tok) {
        res = lk_hdp_verify_token(tok, lk_now_ms(), issuer_lookup, &lc, &tl, &f);
        if (res && has_tok && f.verified) remember(h, tenant, tok);
    } else {
        res = lk_hdp_result_reason(why,
                                   why == LK_HDP_UNRESOLVED_REF
                                       ? "HDP-Token-Ref names no token this worker verified"
                                   : tok_v.len > LK_HDP_MAX_HEADER ? "the header value is too long"
                                   : why == LK_HDP_TRUNCATED       ? "the token ends before its JSON does"
                                                                   : "not base64url-encoded token JSON",
                                   &f);
    }
    if (res && has_ref) json_object_set_new(res, "by_ref", json_true());
    json_decref(tok);
    free(tools);
    if (!res) return NULL; /* out of memory: recorded as nothing */
    h->json = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    if (h->json) *out = lk_str(h->json);
    snprintf(h->reason, sizeof h->reason, "%s", lk_hdp_reason_name(f.reason));
    h->facts = (lk_policy_hdp_t){
        .present = 1, .verified = f.verified, .scope_mismatch = f.scope_mismatch, .reason = h->reason};
    if (!f.verified)
        lk_log(LK_LOG_INFO, NULL, "hdp token not verified: %s", h->reason); /* never the token itself */
    return &h->facts;
}

/* ------------------------------------------------------- admin: issuers -- */

static json_t *issuer_json(PGresult *res, int row)
{
    uint8_t pk[32];
    size_t n = 0;
    char b64[64] = "";
    if (lk_db_bytea(res, row, 3, pk, sizeof pk, &n) == 0 && n == 32)
        sodium_bin2base64(b64, sizeof b64, pk, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char id[80], kid[ISSUER_KID_MAX + 1], name[ISSUER_NAME_MAX + 1], by[80], created[32], revoked[32];
    lk_str_copy(id, sizeof id, lk_db_str(res, row, 0));
    lk_str_copy(kid, sizeof kid, lk_db_str(res, row, 1));
    lk_str_copy(name, sizeof name, lk_db_str(res, row, 2));
    lk_str_copy(by, sizeof by, lk_db_str(res, row, 4));
    lk_str_copy(created, sizeof created, lk_db_str(res, row, 5));
    lk_str_copy(revoked, sizeof revoked, lk_db_str(res, row, 6));
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "object", "hdp_issuer", "id", id, "kid", kid,
                     "name", name, "public_key", b64, "created_by", by, "created_at", created, "revoked_at",
                     lk_db_is_null(res, row, 6) ? json_null() : json_string(revoked));
}

static int valid_label(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

static int op_create(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const fields[] = {"name", "public_key", "kid", NULL};
    int answered = 0;
    json_t *body = policy_admin_load_body(q->json, rep, scratch, &answered);
    if (!body) return answered;
    if (policy_admin_check_fields(body, fields, rep, scratch, &answered) != 0) {
        json_decref(body);
        return answered;
    }
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *pub = json_string_value(json_object_get(body, "public_key"));
    json_t *kidv = json_object_get(body, "kid");
    const char *kid = kidv ? json_string_value(kidv) : name;
    unsigned char pk[32];
    int ret;
    if (!valid_label(name, ISSUER_NAME_MAX)) {
        ret = policy_admin_reply_err(
            rep, scratch, LK_ST_BAD_REQUEST, "invalid_name", "name",
            "The field `name` is required: 1 to %d characters, no control characters.", ISSUER_NAME_MAX);
    } else if (!valid_label(kid, ISSUER_KID_MAX)) {
        ret = policy_admin_reply_err(
            rep, scratch, LK_ST_BAD_REQUEST, "invalid_kid", "kid",
            "The field `kid` (the key id HDP tokens name in signature.kid) must be 1 to "
            "%d characters, no control characters.",
            ISSUER_KID_MAX);
    } else if (!pub || lk_hdp_parse_pubkey(pub, pk) != 0) {
        ret = policy_admin_reply_err(
            rep, scratch, LK_ST_BAD_REQUEST, "invalid_public_key", "public_key",
            "The field `public_key` must be a raw 32-byte Ed25519 public key in base64, "
            "base64url or hex.");
    } else {
        static const char B62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        char id[32] = "hdpi_";
        for (int i = 0; i < 20; i++)
            id[5 + i] = B62[randombytes_uniform(62)];
        id[25] = '\0';
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, id);
        lk_db_param_str(&p, q->tenant);
        lk_db_param_cstr(&p, kid);
        lk_db_param_cstr(&p, name);
        lk_db_param_bytes(&p, pk, sizeof pk);
        lk_db_param_str(&p, q->actor);
        PGresult *res = NULL;
        lk_db_rc_t rc = lk_db_exec(self->db, "hdp_create", &p, &res);
        if (rc != LK_DB_OK) {
            ret = policy_admin_reply_db(rep, scratch, rc, "An active issuer with this kid already exists.");
        } else {
            char b64[64], by[80], created[32];
            sodium_bin2base64(b64, sizeof b64, pk, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
            lk_str_copy(by, sizeof by, q->actor);
            lk_str_copy(created, sizeof created, lk_db_str(res, 0, 0));
            ret =
                policy_admin_reply_json(rep, scratch, LK_ST_OK,
                                        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:n}", "object", "hdp_issuer",
                                                  "id", id, "kid", kid, "name", name, "public_key", b64,
                                                  "created_by", by, "created_at", created, "revoked_at"));
        }
        PQclear(res);
    }
    json_decref(body);
    return ret;
}

static int op_list(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "hdp_list", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    json_t *data = json_array();
    for (int i = 0; data && i < PQntuples(res); i++)
        json_array_append_new(data, issuer_json(res, i));
    PQclear(res);
    return policy_admin_reply_json(rep, scratch, LK_ST_OK,
                                   data ? json_pack("{s:s,s:o}", "object", "list", "data", data) : NULL);
}

static int op_revoke(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (q->object_id.len == 0 || q->object_id.len > 64)
        return policy_admin_reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", NULL,
                                      "No such HDP issuer.");
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    lk_db_param_str(&p, q->object_id);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "hdp_revoke", &p, &res);
    if (rc != LK_DB_OK) return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
    int ret = PQntuples(res) == 1 ? policy_admin_reply_json(rep, scratch, LK_ST_OK, issuer_json(res, 0))
                                  : policy_admin_reply_err(rep, scratch, LK_ST_NOT_FOUND, "not_found", NULL,
                                                           "No such HDP issuer.");
    PQclear(res);
    return ret;
}

int policy_hdp_admin(policy_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    if (lk_str_eq(q->op, "hdp.issuers.create")) return op_create(self, q, rep, scratch);
    if (lk_str_eq(q->op, "hdp.issuers.list")) return op_list(self, q, rep, scratch);
    if (lk_str_eq(q->op, "hdp.issuers.revoke")) return op_revoke(self, q, rep, scratch);
    return policy_admin_reply_err(rep, scratch, LK_ST_NOT_FOUND, "unknown_operation", NULL,
                                  "Unknown admin operation.");
}
