/*  vault_admin - the admin operations (ADMIN_REQ): dispatch, the shared
 *  body checks and answers (vault_admin.h), and providers.*.
 *
 *      providers.create {name, kind, base_url, api_key, models?}
 *      providers.list
 *      providers.get    (object id: the provider)
 *      keys.*           handed to vault_keys.c
 *      tokens.*         handed to vault_keys.c (admin tokens)
 *
 *  Bodies are JSON (jansson, with an allocator that wipes what it frees:
 *  bodies carry provider secrets and new keys). Answers are ADMIN_REP with a
 *  status and a JSON body; refusals use {"error":{"message","type","code"}}.
 *  A provider secret is sealed at once and never appears in an answer; a new
 *  key appears once, in the answer to keys.create or keys.rotate. Messages
 *  never quote a value from the body, only field names.
 */
#include <ctype.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lk_key.h"
#include "lk_log.h"
#include "lk_util.h"
#include "lk_worker.h"
#include "vault.h"
#include "vault_admin.h"
#include "vault_identity.h"

#define MAX_URL             2048
#define ADMIN_OBJECT_ID_MAX 72
#define MAX_MODELS          256

/* ---------------------------------------------------------------- json -- */

static void *wipe_malloc(size_t n)
{
    size_t *p = malloc(n + 2 * sizeof(size_t));
    if (!p) return NULL;
    p[0] = n;
    return p + 2;
}

void vault_admin_wipe_free(void *ptr)
{
    if (!ptr) return;
    size_t *p = (size_t *)ptr - 2;
    sodium_memzero(ptr, p[0]);
    free(p);
}

void vault_admin_init_json(void)
{
    json_set_alloc_funcs(wipe_malloc, vault_admin_wipe_free);
}

/* Puts body (taken) into rep as ADMIN_REP {st, json}. 0 / -1. */
int vault_admin_reply_json(lk_msg_t *rep, lk_buf_t *scratch, lk_status_t st, json_t *body)
{
    int rc = -1;
    if (!body) return -1;
    size_t n = json_dumpb(body, NULL, 0, JSON_COMPACT);
    lk_buf_reset(scratch);
    if (n && lk_buf_reserve(scratch, n) == 0 &&
        json_dumpb(body, (char *)scratch->data, n, JSON_COMPACT) == n) {
        scratch->len = n;
        rep->u.admin_rep.status = st;
        rep->u.admin_rep.json = (lk_str_t){(const char *)scratch->data, n};
        rc = 0;
    }
    json_decref(body);
    return rc;
}

void vault_admin_set_err(vault_admin_err_t *e, lk_status_t st, const char *code, const char *fmt, ...)
{
    e->st = st;
    e->code = code;
    e->type = st == LK_ST_INTERNAL || st == LK_ST_UNAVAILABLE ? "api_error" : "invalid_request_error";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

int vault_admin_reply_err(lk_msg_t *rep, lk_buf_t *scratch, const vault_admin_err_t *e)
{
    json_t *body =
        json_pack("{s:{s:s,s:s,s:s}}", "error", "message", e->msg, "type", e->type, "code", e->code);
    return vault_admin_reply_json(rep, scratch, e->st, body);
}

/* A database failure: ERROR for "retry later" / bugs, ADMIN_REP for decided refusals. */
int vault_admin_reply_db(lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t rc, const char *conflict_msg)
{
    vault_admin_err_t e;
    if (rc == LK_DB_CONFLICT) {
        vault_admin_set_err(&e, LK_ST_CONFLICT, "already_exists", "%s", conflict_msg);
        return vault_admin_reply_err(rep, scratch, &e);
    }
    if (rc == LK_DB_BAD_INPUT) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_value",
                            "A value in the request was refused by the database.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
}

/* ----------------------------------------------------------- validation -- */

static const char *const NOT_SETTABLE[] = {
    "id",        "hash",        "key_hash",       "ciphertext",  "wrapped_dek", "nonce",       "dek",
    "kek_id",    "kek_version", "format_version", "fingerprint", "credential",  "credentials", "tenant",
    "tenant_id", "created_at",  "revoked_at",     "secret",      "key",         NULL};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

/* Every field must be allowed; secret-looking ones are refused by name. 0 / -1. */
int vault_admin_check_fields(json_t *body, const char *const *allowed, vault_admin_err_t *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        (void)v;
        if (in_list(allowed, k)) continue;
        if (in_list(NOT_SETTABLE, k))
            vault_admin_set_err(e, LK_ST_BAD_REQUEST, "field_not_settable",
                                "The field `%.64s` cannot be set.", k);
        else
            vault_admin_set_err(e, LK_ST_BAD_REQUEST, "unknown_field", "Unknown field `%.64s`.", k);
        return -1;
    }
    return 0;
}

static int printable(const char *s, size_t n, int allow_space)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (!allow_space && c == ' ')) return 0;
    }
    return 1;
}

/* A string field: absent (and optional) leaves *out NULL. 0 / -1. */
int vault_admin_get_str(json_t *body, const char *name, int required, size_t max, const char **out,
                        vault_admin_err_t *e)
{
    *out = NULL;
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        vault_admin_set_err(e, LK_ST_BAD_REQUEST, "missing_field", "The field `%s` is required.", name);
        return -1;
    }
    size_t n = json_string_length(v);
    if (!json_is_string(v) || n == 0 || n > max || strlen(json_string_value(v)) != n ||
        !printable(json_string_value(v), n, 1)) {
        vault_admin_set_err(
            e, LK_ST_BAD_REQUEST, "invalid_field",
            "The field `%s` must be a non-empty string of at most %zu bytes without control characters.",
            name, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* models: absent = [] (any). Returns a new array of strings, or NULL with e set. */
json_t *vault_admin_get_models(json_t *body, vault_admin_err_t *e)
{
    json_t *v = json_object_get(body, "models");
    if (!v || json_is_null(v)) return json_array();
    if (!json_is_array(v) || json_array_size(v) > MAX_MODELS) goto bad;
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m)
    {
        size_t n = json_string_length(m);
        if (!json_is_string(m) || n == 0 || n > MAX_NAME || strlen(json_string_value(m)) != n ||
            !printable(json_string_value(m), n, 0))
            goto bad;
    }
    return json_deep_copy(v);
bad:
    vault_admin_set_err(
        e, LK_ST_BAD_REQUEST, "invalid_field",
        "The field `models` must be an array of at most %d model names (strings without spaces).",
        MAX_MODELS);
    return NULL;
}

static int all_digits(const char *s, size_t n)
{
    if (!n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return 1;
}

/* A host that is a number in disguise (decimal, octal, hex, short forms) or a
 * link-local / unspecified address. Dotted quads otherwise pass (loopback and
 * private upstreams are legitimate when self-hosting). */
static int numeric_host_refused(const char *h, size_t n)
{
    int labels = 0, numeric = 1;
    unsigned vals[8];
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && h[j] != '.')
            j++;
        size_t ln = j - i;
        if (ln >= 2 && h[i] == '0' && (h[i + 1] == 'x' || h[i + 1] == 'X')) return 1; /* hex label */
        if (!all_digits(h + i, ln))
            numeric = 0;
        else if (labels < 8)
            vals[labels] = ln > 3 ? 1000 : (unsigned)atoi(h + i);
        if (numeric && ln > 1 && h[i] == '0') return 1; /* octal-looking label */
        labels++;
        i = j + 1;
    }
    if (!numeric) return 0;
    if (labels != 4) return 1; /* 2130706433, 127.1, ... */
    for (int i = 0; i < 4; i++)
        if (vals[i] > 255) return 1;
    return (vals[0] == 169 && vals[1] == 254) || vals[0] == 0;
}

static int ipv6_refused(const char *h, size_t n)
{
    char low[64];
    if (n == 0 || n >= sizeof low) return 1;
    for (size_t i = 0; i < n; i++) {
        char c = (char)tolower((unsigned char)h[i]);
        if (!isxdigit((unsigned char)c) && c != ':' && c != '.') return 1; /* zone ids and anything else */
        low[i] = c;
    }
    low[n] = '\0';
    return strstr(low, "::ffff:") || strncmp(low, "fe8", 3) == 0 || strncmp(low, "fe9", 3) == 0 ||
           strncmp(low, "fea", 3) == 0 || strncmp(low, "feb", 3) == 0 || strcmp(low, "::") == 0 ||
           strcmp(low, "::1") == 0 || strchr(low, '.') != NULL;
}

/* A plain dotted IPv4 address (already checked by numeric_host_refused) in
 * loopback, private, carrier-grade NAT or benchmark ranges; or a name for
 * the local host. */
static int ipv4_private(const char *h, size_t n)
{
    char buf[64];
    if (n >= sizeof buf) return 0;
    memcpy(buf, h, n);
    buf[n] = '\0';
    for (char *p = buf; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    size_t bl = strlen(buf);
    if (strcmp(buf, "localhost") == 0 || (bl > 10 && strcmp(buf + bl - 10, ".localhost") == 0)) return 1;
    unsigned a, b, c, d;
    char tail;
    if (sscanf(buf, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4) return 0;
    return a == 127 || a == 10 || (a == 172 && (b & 0xf0) == 16) || (a == 192 && b == 168) ||
           (a == 100 && (b & 0xc0) == 64) || (a == 198 && (b & 0xfe) == 18) || a >= 224;
}

/* IPv6 unique-local (fc00::/7, which holds the AWS metadata address fd00:ec2::254). */
static int ipv6_private(const char *h, size_t n)
{
    return n >= 2 && (tolower((unsigned char)h[0]) == 'f') &&
           (tolower((unsigned char)h[1]) == 'c' || tolower((unsigned char)h[1]) == 'd');
}

/* http(s)://host[:port][/path], no userinfo, query or fragment. Metadata,
 * link-local, mapped and disguised numeric hosts are always refused;
 * loopback and private addresses only with allow_private. 0 / -1 (e set). */
static int check_base_url(const char *url, int allow_private, vault_admin_err_t *e)
{
    size_t n = strlen(url);
    const char *why = NULL;
    size_t scheme = strncmp(url, "https://", 8) == 0 ? 8 : strncmp(url, "http://", 7) == 0 ? 7 : 0;
    if (!scheme)
        why = "must start with http:// or https://";
    else if (!printable(url, n, 0) || strpbrk(url, "\\\"<>^`{|}"))
        why = "must not contain spaces, control or unsafe characters";
    else if (strpbrk(url, "?#"))
        why = "must not have a query or a fragment";
    if (why) goto bad;
    const char *auth = url + scheme, *slash = strchr(auth, '/');
    size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
    if (memchr(auth, '@', alen)) {
        why = "must not carry credentials (user@host)";
        goto bad;
    }
    const char *host = auth, *port = NULL;
    size_t hlen;
    if (alen && auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close) {
            why = "has a malformed IPv6 address";
            goto bad;
        }
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (ipv6_refused(host, hlen) || (hlen == 13 && strncasecmp(host, "fd00:ec2::254", 13) == 0)) {
            why = "names an IPv6 address that is not allowed (mapped, link-local, metadata or loopback)";
            goto bad;
        }
        if (!allow_private && ipv6_private(host, hlen)) {
            why = "names a private address (set allow_private for a local provider)";
            goto bad;
        }
        if (close + 1 < auth + alen) {
            if (close[1] != ':') {
                why = "has a malformed host";
                goto bad;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
        port = colon ? colon + 1 : NULL;
        if (hlen == 0 || hlen > 253) {
            why = "must name a host";
            goto bad;
        }
        for (size_t i = 0; i < hlen; i++) {
            char c = host[i];
            if (!isalnum((unsigned char)c) && c != '-' && c != '.') {
                why = "has a host with characters other than letters, digits, '-' and '.'";
                goto bad;
            }
            if (c == '.' && (i == 0 || host[i - 1] == '.')) {
                why = "has a malformed host";
                goto bad;
            }
        }
        if (numeric_host_refused(host, hlen)) {
            why = "names a numeric host that is not a plain dotted address, or a link-local one";
            goto bad;
        }
        if (!allow_private && ipv4_private(host, hlen)) {
            why = "names a loopback or private address (set allow_private for a local provider)";
            goto bad;
        }
    }
    if (port) {
        size_t plen = (size_t)(auth + alen - port);
        if (!all_digits(port, plen) || plen > 5 || atoi(port) < 1 || atoi(port) > 65535) {
            why = "has an invalid port";
            goto bad;
        }
    }
    return 0;
bad:
    vault_admin_set_err(e, LK_ST_BAD_REQUEST, "invalid_base_url", "The field `base_url` %s.", why);
    return -1;
}

static int two_digits(const char *s, int *v)
{
    if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1])) return -1;
    *v = (s[0] - '0') * 10 + (s[1] - '0');
    return 0;
}

/* Strict RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). 0 / -1. */
static int parse_rfc3339(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    int y1, y2, mo, d, h, mi, sec, oh = 0, om = 0;
    if (n < 20 || two_digits(s, &y1) || two_digits(s + 2, &y2) || s[4] != '-' || two_digits(s + 5, &mo) ||
        s[7] != '-' || two_digits(s + 8, &d) || (s[10] != 'T' && s[10] != 't') || two_digits(s + 11, &h) ||
        s[13] != ':' || two_digits(s + 14, &mi) || s[16] != ':' || two_digits(s + 17, &sec))
        return -1;
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == start) return -1;
    }
    int sign = 0;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
        sign = 0;
    } else if ((s[i] == '+' || s[i] == '-') && i + 6 == n && !two_digits(s + i + 1, &oh) && s[i + 3] == ':' &&
               !two_digits(s + i + 4, &om) && oh < 24 && om < 60) {
        sign = s[i] == '+' ? 1 : -1;
    } else {
        return -1;
    }
    struct tm tm = {0};
    tm.tm_year = y1 * 100 + y2 - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    time_t t = timegm(&tm);
    struct tm back;
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != d || back.tm_mon != mo - 1)
        return -1; /* e.g. February 30 */
    *out = (int64_t)t - sign * (oh * 3600 + om * 60);
    return 0;
}

/* expires_at: absent/null = never (*has = 0). Unix seconds or RFC 3339, in the future. 0 / -1. */
int vault_admin_get_expiry(json_t *body, int *has, int64_t *at, vault_admin_err_t *e)
{
    *has = 0;
    json_t *v = json_object_get(body, "expires_at");
    if (!v || json_is_null(v)) return 0;
    int ok = 0;
    if (json_is_integer(v)) {
        *at = (int64_t)json_integer_value(v);
        ok = *at > 0 && *at < 253402300800LL; /* year 10000 */
    } else if (json_is_string(v)) {
        ok = parse_rfc3339(json_string_value(v), at) == 0;
    }
    if (!ok) {
        vault_admin_set_err(
            e, LK_ST_BAD_REQUEST, "invalid_field",
            "The field `expires_at` must be unix seconds or an RFC 3339 time such as 2030-01-31T12:00:00Z.");
        return -1;
    }
    if (*at <= lk_now_ms() / 1000) {
        vault_admin_set_err(e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `expires_at` must be in the future.");
        return -1;
    }
    *has = 1;
    return 0;
}

/* Parses the request body as a JSON object. NULL with e set. */
json_t *vault_admin_load_body(lk_str_t text, vault_admin_err_t *e)
{
    if (text.len == 0) {
        vault_admin_set_err(e, LK_ST_BAD_REQUEST, "invalid_json", "A JSON object body is required.");
        return NULL;
    }
    json_error_t jerr;
    json_t *body = json_loadb(text.ptr, text.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body || !json_is_object(body)) {
        /* jerr.text may quote the body (a secret): only its position is shown */
        if (body)
            vault_admin_set_err(e, LK_ST_BAD_REQUEST, "invalid_json",
                                "The request body must be a JSON object.");
        else
            vault_admin_set_err(
                e, LK_ST_BAD_REQUEST, "invalid_json",
                "The request body is not valid JSON (line %d, column %d), or repeats a field.", jerr.line,
                jerr.column);
        json_decref(body);
        sodium_memzero(&jerr, sizeof jerr);
        return NULL;
    }
    return body;
}

/* The object id must be present (the edge checks its shape too). 0 / -1 (e set). */
int vault_admin_need_id(const lk_admin_req_t *q, const char *prefix, const char *what, vault_admin_err_t *e)
{
    size_t pl = strlen(prefix);
    int ok = q->object_id.len > pl && q->object_id.len <= 64 && memcmp(q->object_id.ptr, prefix, pl) == 0;
    for (size_t i = pl; ok && i < q->object_id.len; i++)
        ok = isalnum((unsigned char)q->object_id.ptr[i]) != 0;
    if (!ok) vault_admin_set_err(e, LK_ST_NOT_FOUND, "not_found", "No %s with this id.", what);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------ providers -- */

/* Seals key for (tenant, prov_id) as a new credential and inserts its row, inside
 * the caller's transaction. Fills cred_id (32) and fingerprint (16). Returns 0;
 * or -1 with *e set (bad input), *sealed set (KMS unavailable) or *db_rc set
 * (database), else an internal failure (logged). */
static int seal_credential(vault_t *self, lk_str_t tenant, const char *prov_id, const char *key,
                           char *cred_id, char *fingerprint, vault_admin_err_t *e, int *sealed,
                           lk_db_rc_t *db_rc)
{
    *sealed = 0;
    *db_rc = LK_DB_OK;
    size_t klen = strlen(key);
    for (size_t i = 0; i < klen; i++)
        if ((unsigned char)key[i] <= 0x20 || (unsigned char)key[i] >= 0x7f) {
            vault_admin_set_err(
                e, LK_ST_BAD_REQUEST, "invalid_field",
                "The field `api_key` must be printable ASCII without spaces (it goes into an HTTP header).");
            return -1;
        }
    vault_new_id(cred_id, "cred_");
    size_t show = klen >= 16 ? 4 : klen >= 8 ? 2 : 0; /* never most of a short secret */
    snprintf(fingerprint, 16, "\xe2\x80\xa6%s", key + klen - show);
    uint8_t wrapped[VAULT_WRAPPED_MAX], nonce[VAULT_NONCE_LEN];
    size_t wlen = 0;
    /* kek_id / kek_version: set by vault_cred_seal to the KMS's current KEK */
    vault_ad_t ad = {VAULT_FORMAT_VERSION, tenant, lk_str(cred_id), lk_str(prov_id), LK_STR_NULL, 0};
    uint8_t *ct = malloc(klen + VAULT_TAG_LEN);
    vault_kms_rc_t krc =
        ct ? vault_cred_seal(self, &ad, (const uint8_t *)key, klen, wrapped, &wlen, nonce, ct)
           : VAULT_KMS_REFUSED;
    if (krc != VAULT_KMS_OK) {
        free(ct);
        if (krc == VAULT_KMS_UNAVAILABLE)
            *sealed = 1;
        else
            lk_log_error("could not seal a new credential");
        return -1;
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, cred_id);
    lk_db_param_str(&p, tenant);
    lk_db_param_cstr(&p, prov_id);
    lk_db_param_i64(&p, VAULT_FORMAT_VERSION);
    lk_db_param_str(&p, ad.kek_id);
    lk_db_param_i64(&p, ad.kek_version);
    lk_db_param_bytes(&p, wrapped, wlen);
    lk_db_param_bytes(&p, nonce, sizeof nonce);
    lk_db_param_bytes(&p, ct, klen + VAULT_TAG_LEN);
    lk_db_param_cstr(&p, fingerprint);
    *db_rc = lk_db_exec(self->db, "cred_insert", &p, NULL);
    free(ct);
    return *db_rc == LK_DB_OK ? 0 : -1;
}

/* seal_credential inside the caller's open transaction. Returns 1 when it has
 * answered the request itself (bad input, sealed vault or an internal failure:
 * the transaction is rolled back and *ret set); 0 otherwise, with *rc the
 * database outcome for the caller to commit or report. */
static int seal_or_answer(vault_t *self, lk_str_t tenant, const char *prov_id, const char *key, char *cred_id,
                          char *fingerprint, lk_msg_t *rep, lk_buf_t *scratch, lk_db_rc_t *rc, int *ret)
{
    vault_admin_err_t e;
    int sealed;
    e.st = LK_ST_OK;
    if (seal_credential(self, tenant, prov_id, key, cred_id, fingerprint, &e, &sealed, rc) == 0 ||
        *rc != LK_DB_OK)
        return 0;
    lk_db_rollback(self->db);
    if (sealed)
        *ret = lk_worker_error(rep, LK_ST_UNAVAILABLE, "vault is sealed");
    else if (e.st != LK_ST_OK)
        *ret = vault_admin_reply_err(rep, scratch, &e);
    else
        *ret = -1; /* logged by seal_credential; the worker answers INTERNAL */
    return 1;
}

static int providers_create(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    static const char *const allowed[] = {"name",   "kind",          "base_url", "api_key",
                                          "models", "allow_private", NULL};
    vault_admin_err_t e;
    json_t *models = NULL, *out = NULL;
    char *models_text = NULL;
    PGresult *res = NULL;
    int ret = -1;
    const char *name, *kind, *url, *key;
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body || vault_admin_check_fields(body, allowed, &e) != 0 ||
        vault_admin_get_str(body, "name", 1, MAX_NAME, &name, &e) != 0 ||
        vault_admin_get_str(body, "kind", 1, 32, &kind, &e) != 0 ||
        vault_admin_get_str(body, "base_url", 1, MAX_URL, &url, &e) != 0 ||
        vault_admin_get_str(body, "api_key", 1, VAULT_MAX_SECRET, &key, &e) != 0 ||
        !(models = vault_admin_get_models(body, &e)))
        goto refuse;
    if (strcmp(kind, "openai") != 0 && strcmp(kind, "anthropic") != 0 && strcmp(kind, "azure") != 0 &&
        strcmp(kind, "openai-compatible") != 0) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `kind` must be one of openai, anthropic, azure, openai-compatible.");
        goto refuse;
    }
    json_t *ap = json_object_get(body, "allow_private");
    if (ap && !json_is_boolean(ap)) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "invalid_field",
                            "The field `allow_private` must be a boolean.");
        goto refuse;
    }
    if (check_base_url(url, json_is_true(ap), &e) != 0) goto refuse;
    models_text = json_dumps(models, JSON_COMPACT);
    if (!models_text) goto cleanup;

    char prov_id[32], cred_id[32], fingerprint[16];
    vault_new_id(prov_id, "prov_");
    lk_db_rc_t rc = lk_db_begin(self->db);
    if (rc == LK_DB_OK) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, prov_id);
        lk_db_param_str(&p, q->tenant);
        lk_db_param_cstr(&p, name);
        lk_db_param_cstr(&p, kind);
        lk_db_param_cstr(&p, url);
        lk_db_param_cstr(&p, models_text);
        rc = lk_db_exec(self->db, "prov_insert", &p, &res);
    }
    if (rc == LK_DB_OK &&
        seal_or_answer(self, q->tenant, prov_id, key, cred_id, fingerprint, rep, scratch, &rc, &ret))
        goto cleanup;
    json_object_del(body, "api_key"); /* wiped by the allocator */
    key = NULL;
    if (rc == LK_DB_OK) rc = lk_db_commit(self->db);
    if (rc != LK_DB_OK) {
        lk_db_rollback(self->db);
        char msg[300];
        snprintf(msg, sizeof msg, "A provider with this name already exists.");
        ret = vault_admin_reply_db(rep, scratch, rc, msg);
        goto cleanup;
    }
    lk_log_info("provider %s created with credential %s", prov_id, cred_id);
    out = json_pack("{s:s,s:s,s:s,s:s,s:O,s:{s:s,s:s},s:s%}", "id", prov_id, "name", name, "kind", kind,
                    "base_url", url, "models", models, "credential", "id", cred_id, "fingerprint",
                    fingerprint, "created_at", PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    ret = vault_admin_reply_json(rep, scratch, LK_ST_OK, out);
    goto cleanup;
refuse:
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    PQclear(res);
    if (models_text) vault_admin_wipe_free(models_text);
    json_decref(models);
    json_decref(body);
    return ret;
}

/* Answers {"data":[...]} with one row(res, i) per row of the tenant-scoped
 * statement stmt ($1 = tenant). */
int vault_admin_reply_list(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch,
                           const char *stmt, json_t *(*row)(PGresult *res, int i))
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, stmt, &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    json_t *data = json_array();
    for (int i = 0; data && i < PQntuples(res); i++) {
        json_t *r = row(res, i);
        if (!r || json_array_append_new(data, r) != 0) {
            json_decref(data);
            data = NULL;
        }
    }
    PQclear(res);
    return data ? vault_admin_reply_json(rep, scratch, LK_ST_OK, json_pack("{s:o}", "data", data)) : -1;
}

/* The public view of one provider row (prov_list / prov_get columns). */
static json_t *prov_row(PGresult *res, int i)
{
    json_t *models = json_loads(PQgetvalue(res, i, 4), 0, NULL);
    json_t *cred = lk_db_is_null(res, i, 6) ? json_null()
                                            : json_pack("{s:s,s:s}", "id", PQgetvalue(res, i, 6),
                                                        "fingerprint", PQgetvalue(res, i, 7));
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:s}", "id", PQgetvalue(res, i, 0), "name",
                     PQgetvalue(res, i, 1), "kind", PQgetvalue(res, i, 2), "base_url", PQgetvalue(res, i, 3),
                     "models", models ? models : json_array(), "credential", cred, "created_at",
                     PQgetvalue(res, i, 5));
}

static int providers_list(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    return vault_admin_reply_list(self, q, rep, scratch, "prov_list", prov_row);
}

static int providers_get(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_admin_err_t e;
    if (vault_admin_need_id(q, "prov_", "provider", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->object_id);
    lk_db_param_str(&p, q->tenant);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "prov_get", &p, &res);
    if (rc != LK_DB_OK) return vault_admin_reply_db(rep, scratch, rc, "");
    if (PQntuples(res) != 1) {
        PQclear(res);
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No provider with this id.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    json_t *row = prov_row(res, 0);
    PQclear(res);
    return row ? vault_admin_reply_json(rep, scratch, LK_ST_OK, row) : -1;
}

/* providers.replace_credential: a new secret for an existing provider. The new
 * credential row becomes current at once (the newest row wins); the old rows
 * stay for the record and are never returned. */
static int providers_replace_credential(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep,
                                        lk_buf_t *scratch)
{
    static const char *const allowed[] = {"api_key", NULL};
    vault_admin_err_t e;
    PGresult *res = NULL;
    int ret = -1;
    const char *key;
    char prov_id[ADMIN_OBJECT_ID_MAX], cred_id[32], fingerprint[16];
    if (vault_admin_need_id(q, "prov_", "provider", &e) != 0) return vault_admin_reply_err(rep, scratch, &e);
    lk_str_copy(prov_id, sizeof prov_id, q->object_id);
    json_t *body = vault_admin_load_body(q->json, &e);
    if (!body || vault_admin_check_fields(body, allowed, &e) != 0 ||
        vault_admin_get_str(body, "api_key", 1, VAULT_MAX_SECRET, &key, &e) != 0)
        goto refuse;
    lk_db_rc_t rc = lk_db_begin(self->db);
    if (rc == LK_DB_OK) {
        lk_db_params_t p;
        lk_db_params_init(&p);
        lk_db_param_cstr(&p, prov_id);
        lk_db_param_str(&p, q->tenant);
        rc = lk_db_exec(self->db, "prov_lock", &p, &res);
    }
    if (rc == LK_DB_OK && PQntuples(res) != 1) {
        lk_db_rollback(self->db);
        vault_admin_set_err(&e, LK_ST_NOT_FOUND, "not_found", "No provider with this id.");
        goto refuse;
    }
    if (rc == LK_DB_OK &&
        seal_or_answer(self, q->tenant, prov_id, key, cred_id, fingerprint, rep, scratch, &rc, &ret))
        goto cleanup;
    json_object_del(body, "api_key"); /* wiped by the allocator */
    key = NULL;
    if (rc == LK_DB_OK) rc = lk_db_commit(self->db);
    if (rc != LK_DB_OK) {
        lk_db_rollback(self->db);
        ret = vault_admin_reply_db(rep, scratch, rc, "");
        goto cleanup;
    }
    lk_log_info("provider %s: credential replaced by %s", prov_id, cred_id);
    ret = providers_get(self, q, rep, scratch);
    goto cleanup;
refuse:
    ret = vault_admin_reply_err(rep, scratch, &e);
cleanup:
    PQclear(res);
    json_decref(body);
    return ret;
}

/* ------------------------------------------------------------- dispatch -- */

int vault_admin_prepare(lk_db_t *db)
{
    return vault_keys_prepare(db) | vault_routes_prepare(db) |
           lk_db_prepare(
               db, "prov_insert",
               "INSERT INTO providers (id, tenant_id, name, kind, base_url, models) "
               "VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, "
               "ARRAY(SELECT json_array_elements_text($6::text::json))) RETURNING " TS("created_at")) |
           lk_db_prepare(
               db, "cred_insert",
               "INSERT INTO credentials (id, tenant_id, provider_id, format_version, kek_id, kek_version, "
               "wrapped_dek, nonce, ciphertext, fingerprint) VALUES ($1::text, $2::text, $3::text, "
               "$4::int, $5::text, $6::int, $7::bytea, $8::bytea, $9::bytea, $10::text)") |
           lk_db_prepare(db, "prov_list",
                         "SELECT p.id, p.name, p.kind, p.base_url, array_to_json(p.models)::text, " TS(
                             "p.created_at") ", c.id, c.fingerprint FROM providers p LEFT JOIN LATERAL "
                                             "(SELECT id, fingerprint "
                                             "FROM credentials c WHERE c.provider_id = p.id AND c.tenant_id "
                                             "= p.tenant_id "
                                             "ORDER BY c.created_at DESC, c.id DESC LIMIT 1) c ON true "
                                             "WHERE p.tenant_id = $1::text ORDER BY p.created_at, p.id") |
           lk_db_prepare(db, "prov_lock",
                         "SELECT id FROM providers WHERE id = $1::text AND tenant_id = $2::text FOR UPDATE") |
           lk_db_prepare(
               db, "prov_get",
               "SELECT p.id, p.name, p.kind, p.base_url, array_to_json(p.models)::text, " TS(
                   "p.created_at") ", c.id, c.fingerprint FROM providers p LEFT JOIN LATERAL "
                                   "(SELECT id, fingerprint FROM credentials c WHERE c.provider_id = p.id "
                                   "AND c.tenant_id = p.tenant_id ORDER BY c.created_at DESC, c.id DESC "
                                   "LIMIT 1) c ON true WHERE p.id = $1::text AND p.tenant_id = $2::text");
}

int vault_admin_handle(vault_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_admin_req_t *q = &req->u.admin_req;
    vault_admin_err_t e;
    /* sso.login comes from the edge before anyone is signed in; scim.* needs role scim (checked there) */
    if (lk_str_eq(q->op, "sso.login")) return vault_identity_handle(self, q, rep, scratch);
    if (q->tenant.len && ((q->op.len > 4 && memcmp(q->op.ptr, "sso.", 4) == 0) ||
                          (q->op.len > 5 && memcmp(q->op.ptr, "scim.", 5) == 0)))
        return vault_identity_handle(self, q, rep, scratch);
    if (q->tenant.len == 0) {
        vault_admin_set_err(&e, LK_ST_BAD_REQUEST, "missing_tenant", "The operation has no tenant.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    if (!lk_str_eq(q->role, "admin")) {
        vault_admin_set_err(&e, LK_ST_FORBIDDEN, "insufficient_role", "This operation needs an admin token.");
        return vault_admin_reply_err(rep, scratch, &e);
    }
    if (lk_str_eq(q->op, "providers.create")) return providers_create(self, q, rep, scratch);
    if (lk_str_eq(q->op, "providers.list")) return providers_list(self, q, rep, scratch);
    if (q->op.len > 5 && memcmp(q->op.ptr, "keys.", 5) == 0) return vault_keys_handle(self, q, rep, scratch);
    if (lk_str_eq(q->op, "providers.get")) return providers_get(self, q, rep, scratch);
    if (lk_str_eq(q->op, "providers.replace_credential"))
        return providers_replace_credential(self, q, rep, scratch);
    if (q->op.len > 7 && memcmp(q->op.ptr, "tokens.", 7) == 0)
        return vault_tokens_handle(self, q, rep, scratch);
    if (q->op.len > 7 && memcmp(q->op.ptr, "routes.", 7) == 0)
        return vault_routes_handle(self, q, rep, scratch);
    vault_admin_set_err(&e, LK_ST_NOT_FOUND, "unknown_operation", "The vault has no operation `%.*s`.",
                        (int)(q->op.len > 64 ? 64 : q->op.len), q->op.ptr);
    return vault_admin_reply_err(rep, scratch, &e);
}
