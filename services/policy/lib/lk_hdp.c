/*  lk_hdp - HDP token verification (see lk_hdp.h, docs/hdp.md). */
#include "lk_hdp.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lk_hdp_reason_name(lk_hdp_reason_t r)
{
    switch (r) {
    case LK_HDP_OK:
        return "ok";
    case LK_HDP_MALFORMED:
        return "malformed";
    case LK_HDP_TRUNCATED:
        return "truncated";
    case LK_HDP_UNSUPPORTED_VERSION:
        return "unsupported_version";
    case LK_HDP_UNSUPPORTED_ALG:
        return "unsupported_alg";
    case LK_HDP_UNKNOWN_ISSUER:
        return "unknown_issuer";
    case LK_HDP_ISSUER_REVOKED:
        return "issuer_revoked";
    case LK_HDP_ISSUER_UNAVAILABLE:
        return "issuer_unavailable";
    case LK_HDP_BAD_SIGNATURE:
        return "bad_signature";
    case LK_HDP_CHAIN_BROKEN:
        return "chain_broken";
    case LK_HDP_TOO_MANY_HOPS:
        return "too_many_hops";
    case LK_HDP_EXPIRED:
        return "expired";
    case LK_HDP_UNRESOLVED_REF:
        return "unresolved_ref";
    }
    return "malformed";
}

/* ---- RFC 8785 canonical JSON ----------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int bad; /* out of memory or not expressible */
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->bad) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->bad = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_cstr(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* ECMAScript Number.prototype.toString of a finite double (RFC 8785 section 3.2.2.3). */
static int jcs_number(double x, char *out, size_t cap)
{
    if (!isfinite(x)) return -1;
    if (x == 0) return snprintf(out, cap, "0") < (int)cap ? 0 : -1;
    char neg[2] = {0};
    if (x < 0) {
        neg[0] = '-';
        x = -x;
    }
    /* the shortest digit string that reads back as x */
    char sci[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p - 1, x);
        if (strtod(sci, NULL) == x) break;
    }
    char digits[24];
    size_t k = 0;
    const char *s = sci;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9' && k < sizeof digits - 1) digits[k++] = *s;
    digits[k] = '\0';
    int e = *s == 'e' ? atoi(s + 1) : 0;
    while (k > 1 && digits[k - 1] == '0')
        digits[--k] = '\0';
    int n = e + 1; /* x = 0.d1d2...dk * 10^n */
    char body[64];
    if ((int)k <= n && n <= 21) {
        snprintf(body, sizeof body, "%s%.*s", digits, n - (int)k, "000000000000000000000");
    } else if (0 < n && n <= 21) {
        snprintf(body, sizeof body, "%.*s.%s", n, digits, digits + n);
    } else if (-6 < n && n <= 0) {
        snprintf(body, sizeof body, "0.%.*s%s", -n, "000000", digits);
    } else {
        int ex = n - 1;
        if (k == 1)
            snprintf(body, sizeof body, "%ce%c%d", digits[0], ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
        else
            snprintf(body, sizeof body, "%c.%se%c%d", digits[0], digits + 1, ex < 0 ? '-' : '+',
                     ex < 0 ? -ex : ex);
    }
    return snprintf(out, cap, "%s%s", neg, body) < (int)cap ? 0 : -1;
}

static void jcs_string(sbuf_t *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (esc) {
            sb_put(b, s + run, i - run);
            sb_cstr(b, esc);
            run = i + 1;
        }
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

/* Next UTF-16 code unit of UTF-8 string s (jansson guarantees valid UTF-8);
 * *pend holds the low surrogate still owed. 0 at the end. */
static unsigned next_u16(const unsigned char **s, const unsigned char *end, unsigned *pend)
{
    if (*pend) {
        unsigned u = *pend;
        *pend = 0;
        return u;
    }
    if (*s >= end) return 0;
    unsigned c = *(*s)++, cp;
    int more = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    cp = more == 0 ? c : more == 1 ? c & 0x1f : more == 2 ? c & 0x0f : c & 0x07;
    while (more-- > 0 && *s < end)
        cp = (cp << 6) | (*(*s)++ & 0x3f);
    if (cp >= 0x10000) {
        cp -= 0x10000;
        *pend = 0xdc00 + (cp & 0x3ff);
        return 0xd800 + (cp >> 10);
    }
    return cp;
}

/* Compares keys by their UTF-16 code units (RFC 8785 section 3.2.3). */
static int cmp_u16(const char *a, size_t an, const char *b, size_t bn)
{
    const unsigned char *pa = (const unsigned char *)a, *ea = pa + an;
    const unsigned char *pb = (const unsigned char *)b, *eb = pb + bn;
    unsigned qa = 0, qb = 0;
    for (;;) {
        int enda = pa >= ea && !qa, endb = pb >= eb && !qb;
        if (enda || endb) return enda && endb ? 0 : enda ? -1 : 1;
        unsigned ua = next_u16(&pa, ea, &qa), ub = next_u16(&pb, eb, &qb);
        if (ua != ub) return ua < ub ? -1 : 1;
    }
}

typedef struct {
    const char *k;
    size_t n;
    json_t *v;
} member_t;

static int member_cmp(const void *x, const void *y)
{
    const member_t *a = x, *b = y;
    return cmp_u16(a->k, a->n, b->k, b->n);
}

static void jcs_value(sbuf_t *b, const json_t *v, int depth)
{
    char num[64];
    if (b->bad) return;
    if (depth > LK_HDP_MAX_DEPTH) {
        b->bad = 1;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_NULL:
        sb_cstr(b, "null");
        break;
    case JSON_TRUE:
        sb_cstr(b, "true");
        break;
    case JSON_FALSE:
        sb_cstr(b, "false");
        break;
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        if (i >= -LK_HDP_MAX_SAFE_INT && i <= LK_HDP_MAX_SAFE_INT) {
            snprintf(num, sizeof num, "%lld", (long long)i);
        } else if (jcs_number((double)i, num, sizeof num) != 0) {
            b->bad = 1;
            return;
        }
        sb_cstr(b, num);
        break;
    }
    case JSON_REAL:
        if (jcs_number(json_real_value(v), num, sizeof num) != 0) {
            b->bad = 1;
            return;
        }
        sb_cstr(b, num);
        break;
    case JSON_STRING:
        jcs_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_ARRAY: {
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sb_put(b, ",", 1);
            jcs_value(b, json_array_get(v, i), depth + 1);
        }
        sb_put(b, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        member_t *m = n ? calloc(n, sizeof *m) : NULL;
        if (n && !m) {
            b->bad = 1;
            return;
        }
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            if (i < n) m[i++] = (member_t){k, strlen(k), e};
        }
        if (i > 1) qsort(m, i, sizeof *m, member_cmp); /* m is NULL for {} */
        sb_put(b, "{", 1);
        for (size_t j = 0; j < i; j++) {
            if (j) sb_put(b, ",", 1);
            jcs_string(b, m[j].k, m[j].n);
            sb_put(b, ":", 1);
            jcs_value(b, m[j].v, depth + 1);
        }
        sb_put(b, "}", 1);
        free(m);
        break;
    }
    }
}

char *lk_hdp_jcs(const json_t *v, size_t *len)
{
    sbuf_t b = {0};
    if (!v) return NULL;
    jcs_value(&b, v, 0);
    if (!b.bad && !b.p) sb_put(&b, "", 0);
    if (b.bad) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

json_t *lk_hdp_parse(const char *s, size_t len, json_error_t *err)
{
    return json_loadb(s, len, JSON_REJECT_DUPLICATES, err);
}

/* ---- decoding -------------------------------------------------------------------------------- */

static int depth_ok(const json_t *v, int depth)
{
    if (depth > LK_HDP_MAX_DEPTH) return 0;
    size_t i;
    const char *k;
    json_t *e;
    if (json_is_array(v)) {
        json_array_foreach(v, i, e) if (!depth_ok(e, depth + 1)) return 0;
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, e) if (!depth_ok(e, depth + 1)) return 0;
    }
    return 1;
}

/* Parses JSON text; a parse error at the very end of the text is a truncation. */
static json_t *parse_text(const char *s, size_t n, lk_hdp_reason_t *why)
{
    json_error_t je;
    json_t *j = lk_hdp_parse(s, n, &je);
    if (!j) {
        /* jansson reports a premature end at (or one past) the last byte */
        *why = (je.position >= (int)n - 1 && strstr(je.text, "duplicate") == NULL) ? LK_HDP_TRUNCATED
                                                                                   : LK_HDP_MALFORMED;
        return NULL;
    }
    if (!depth_ok(j, 0)) {
        json_decref(j);
        *why = LK_HDP_MALFORMED;
        return NULL;
    }
    return j;
}

json_t *lk_hdp_decode(const char *value, size_t len, lk_hdp_reason_t *why)
{
    *why = LK_HDP_MALFORMED;
    while (len && (value[0] == ' ' || value[0] == '\t'))
        value++, len--;
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t' || value[len - 1] == '\r'))
        len--;
    if (len == 0 || len > LK_HDP_MAX_HEADER) return NULL;
    if (value[0] == '{') return parse_text(value, len, why);
    size_t cap = len / 4 * 3 + 3;
    unsigned char *bin = malloc(cap);
    if (!bin) return NULL;
    size_t n = 0;
    json_t *j = NULL;
    const char *end = NULL;
    if (sodium_base642bin(bin, cap, value, len, "=", &n, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
            0 &&
        end == value + len) {
        j = parse_text((const char *)bin, n, why);
    } else if (len > 1 &&
               sodium_base642bin(bin, cap, value, len - 1, "=", &n, &end,
                                 sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
               end == value + len - 1) {
        /* a cut value can leave one dangling base64 character */
        json_t *k = parse_text((const char *)bin, n, why);
        if (k) {
            json_decref(k);
            *why = LK_HDP_MALFORMED;
        }
    }
    free(bin);
    return j;
}

/* ---- the result ------------------------------------------------------------------------------ */

/* A copy of s cut to at most max bytes on a UTF-8 character boundary. */
static json_t *short_str(const char *s, size_t max)
{
    if (!s) return json_null();
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    json_t *j = json_stringn(s, n);
    return j ? j : json_null();
}

static const char *str_at(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_t *new_result(void)
{
    json_t *r = json_object();
    if (!r) return NULL;
    json_object_set_new(r, "present", json_true());
    json_object_set_new(r, "verified", json_false());
    json_object_set_new(r, "reason", json_string("malformed"));
    json_object_set_new(r, "hops", json_integer(0));
    json_object_set_new(r, "scope_mismatch", json_false());
    json_object_set_new(r, "mismatches", json_array());
    return r;
}

static void set_reason(json_t *r, lk_hdp_facts_t *f, lk_hdp_reason_t reason, const char *detail)
{
    f->reason = reason;
    f->verified = reason == LK_HDP_OK;
    json_object_set_new(r, "verified", json_boolean(reason == LK_HDP_OK));
    json_object_set_new(r, "reason", json_string(lk_hdp_reason_name(reason)));
    if (detail && *detail)
        json_object_set_new(r, "detail", short_str(detail, 200));
    else
        json_object_del(r, "detail");
}

json_t *lk_hdp_result_reason(lk_hdp_reason_t reason, const char *detail, lk_hdp_facts_t *facts)
{
    lk_hdp_facts_t dummy;
    if (!facts) facts = &dummy;
    memset(facts, 0, sizeof *facts);
    facts->present = 1;
    json_t *r = new_result();
    if (r) set_reason(r, facts, reason, detail);
    return r;
}

/* ---- schema ---------------------------------------------------------------------------------- */

static int is_int_in(json_t *v, long long lo, long long hi)
{
    return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

static int is_sig86(json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) != 86) return 0;
    for (size_t i = 0; i < 86; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return 0;
    }
    return 1;
}

static int strings_array(json_t *v, size_t max)
{
    if (!json_is_array(v) || json_array_size(v) > max) return 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) if (!json_is_string(e)) return 0;
    return 1;
}

/* The token's shape (HDP 0.1 section 3 as the reference verifier checks it). NULL or what is wrong. */
static const char *schema_error(json_t *t, char *buf, size_t cap)
{
    static const char *const top[] = {"hdp", "header", "principal", "scope", "chain", "signature"};
    if (!json_is_object(t)) return "token is not a JSON object";
    if (json_object_size(t) != 6)
        return "token must have exactly hdp, header, principal, scope, chain, signature";
    for (size_t i = 0; i < 6; i++)
        if (!json_object_get(t, top[i]))
            return "token must have exactly hdp, header, principal, scope, chain, signature";
    json_t *h = json_object_get(t, "header"), *p = json_object_get(t, "principal");
    json_t *s = json_object_get(t, "scope"), *c = json_object_get(t, "chain");
    json_t *g = json_object_get(t, "signature");
    if (!json_is_string(json_object_get(t, "hdp"))) return "hdp must be a string";
    if (!json_is_object(h)) return "header must be an object";
    if (!json_is_string(json_object_get(h, "token_id"))) return "header.token_id must be a string";
    if (!is_int_in(json_object_get(h, "issued_at"), 0, LK_HDP_MAX_SAFE_INT))
        return "header.issued_at must be an integer (ms)";
    if (!is_int_in(json_object_get(h, "expires_at"), 0, LK_HDP_MAX_SAFE_INT))
        return "header.expires_at must be an integer (ms)";
    if (json_integer_value(json_object_get(h, "expires_at")) <=
        json_integer_value(json_object_get(h, "issued_at")))
        return "header.expires_at must be after header.issued_at";
    const char *sid = str_at(h, "session_id");
    if (!sid || !*sid) return "header.session_id must be a non-empty string";
    if (!json_is_string(json_object_get(h, "version"))) return "header.version must be a string";
    if (!json_is_object(p)) return "principal must be an object";
    if (!json_is_string(json_object_get(p, "id"))) return "principal.id must be a string";
    if (!json_is_string(json_object_get(p, "id_type"))) return "principal.id_type must be a string";
    if (!json_is_object(s)) return "scope must be an object";
    if (!json_is_string(json_object_get(s, "intent"))) return "scope.intent must be a string";
    if (!json_is_string(json_object_get(s, "data_classification")))
        return "scope.data_classification must be a string";
    if (!json_is_boolean(json_object_get(s, "network_egress")))
        return "scope.network_egress must be a boolean";
    if (!json_is_boolean(json_object_get(s, "persistence"))) return "scope.persistence must be a boolean";
    json_t *v;
    if ((v = json_object_get(s, "authorized_tools")) && !strings_array(v, LK_HDP_MAX_TOOLS))
        return "scope.authorized_tools must be an array of at most 256 strings";
    if ((v = json_object_get(s, "authorized_resources")) && !strings_array(v, LK_HDP_MAX_TOOLS))
        return "scope.authorized_resources must be an array of at most 256 strings";
    if ((v = json_object_get(s, "max_hops")) && !is_int_in(v, 1, LK_HDP_MAX_SAFE_INT))
        return "scope.max_hops must be a positive integer";
    if (!json_is_object(g)) return "signature must be an object";
    if (!json_is_string(json_object_get(g, "alg"))) return "signature.alg must be a string";
    const char *kid = str_at(g, "kid");
    if (!kid || !*kid) return "signature.kid must be a non-empty string";
    if (!is_sig86(json_object_get(g, "value"))) return "signature.value must be 86 base64url characters";
    if (!json_is_array(c)) return "chain must be an array";
    size_t i;
    json_t *hop;
    json_array_foreach(c, i, hop)
    {
        const char *what = NULL;
        if (!json_is_object(hop))
            what = "must be an object";
        else if (!is_int_in(json_object_get(hop, "seq"), 1, LK_HDP_MAX_SAFE_INT))
            what = "seq must be a positive integer";
        else if (!json_is_string(json_object_get(hop, "agent_id")) ||
                 !json_is_string(json_object_get(hop, "agent_type")) ||
                 !json_is_string(json_object_get(hop, "action_summary")))
            what = "agent_id, agent_type and action_summary must be strings";
        else if (!is_int_in(json_object_get(hop, "timestamp"), 0, LK_HDP_MAX_SAFE_INT) ||
                 !is_int_in(json_object_get(hop, "parent_hop"), 0, LK_HDP_MAX_SAFE_INT))
            what = "timestamp and parent_hop must be non-negative integers";
        else if (!is_sig86(json_object_get(hop, "hop_signature")))
            what = "hop_signature must be 86 base64url characters";
        if (what) {
            snprintf(buf, cap, "chain[%zu].%s", i, what);
            return buf;
        }
    }
    return NULL;
}

/* ---- verification ---------------------------------------------------------------------------- */

static int ed25519_ok(const json_t *payload, const char *sig86, const unsigned char pk[32])
{
    unsigned char sig[crypto_sign_BYTES + 2];
    size_t n = 0;
    if (sodium_base642bin(sig, sizeof sig, sig86, strlen(sig86), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != crypto_sign_BYTES)
        return 0;
    size_t len = 0;
    char *msg = lk_hdp_jcs(payload, &len);
    if (!msg) return 0;
    int ok = crypto_sign_verify_detached(sig, (const unsigned char *)msg, len, pk) == 0;
    free(msg);
    return ok;
}

static int root_ok(json_t *t, const unsigned char pk[32])
{
    json_t *pl = json_pack("{s:O,s:O,s:O,s:O,s:[]}", "hdp", json_object_get(t, "hdp"), "header",
                           json_object_get(t, "header"), "principal", json_object_get(t, "principal"),
                           "scope", json_object_get(t, "scope"), "chain");
    if (!pl) return 0;
    int ok = ed25519_ok(pl, str_at(json_object_get(t, "signature"), "value"), pk);
    json_decref(pl);
    return ok;
}

/* Hop i signs [root signature value, hops 0..i-1 as sent, hop i without hop_signature]. */
static int hop_ok(json_t *t, size_t i, const unsigned char pk[32])
{
    json_t *chain = json_object_get(t, "chain"), *hop = json_array_get(chain, i);
    json_t *pl = json_array();
    json_t *cur = json_copy(hop);
    int ok = 0;
    if (!pl || !cur) goto done;
    json_object_del(cur, "hop_signature");
    json_array_append(pl, json_object_get(json_object_get(t, "signature"), "value"));
    for (size_t j = 0; j < i; j++)
        json_array_append(pl, json_array_get(chain, j));
    json_array_append(pl, cur);
    ok = ed25519_ok(pl, str_at(hop, "hop_signature"), pk);
done:
    json_decref(cur);
    json_decref(pl);
    return ok;
}

static int in_list(json_t *list, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) if (json_is_string(e) && strcmp(json_string_value(e), name) == 0) return 1;
    return 0;
}

/* Fills the summary fields every parsed token has. */
static void summarize(json_t *r, json_t *t)
{
    json_t *h = json_object_get(t, "header"), *p = json_object_get(t, "principal");
    json_t *s = json_object_get(t, "scope"), *c = json_object_get(t, "chain");
    json_object_set_new(r, "token_id", short_str(str_at(h, "token_id"), 64));
    json_object_set_new(r, "session", short_str(str_at(h, "session_id"), 128));
    json_object_set_new(r, "expires_at", json_integer(json_integer_value(json_object_get(h, "expires_at"))));
    json_object_set_new(r, "principal",
                        json_pack("{s:o,s:o}", "id", short_str(str_at(p, "id"), 128), "id_type",
                                  short_str(str_at(p, "id_type"), 32)));
    json_t *sc = json_pack("{s:o,s:o}", "intent", short_str(str_at(s, "intent"), 200), "data_classification",
                           short_str(str_at(s, "data_classification"), 32));
    if (sc) {
        json_t *v;
        if ((v = json_object_get(s, "max_hops"))) json_object_set(sc, "max_hops", v);
        if ((v = json_object_get(s, "authorized_tools"))) {
            json_t *a = json_array();
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) if (i < 32)
                json_array_append_new(a, short_str(json_string_value(e), 64));
            json_object_set_new(sc, "authorized_tools", a);
        }
        json_object_set_new(r, "scope", sc);
    }
    json_object_set_new(r, "hops", json_integer((json_int_t)json_array_size(c)));
    json_t *sum = json_array();
    size_t i;
    json_t *hop;
    json_array_foreach(c, i, hop)
    {
        if (i >= LK_HDP_SUMMARY_HOPS) break;
        json_array_append_new(sum, json_pack("{s:I,s:o,s:o}", "seq",
                                             (json_int_t)json_integer_value(json_object_get(hop, "seq")),
                                             "agent_id", short_str(str_at(hop, "agent_id"), 64), "agent_type",
                                             short_str(str_at(hop, "agent_type"), 32)));
    }
    json_object_set_new(r, "chain", sum);
}

static void add_mismatch(json_t *r, lk_hdp_facts_t *f, const char *kind, const char *tool)
{
    json_t *m = json_object_get(r, "mismatches");
    f->scope_mismatch = 1;
    json_object_set_new(r, "scope_mismatch", json_true());
    if (json_array_size(m) >= 16) return;
    size_t i;
    json_t *e;
    json_array_foreach(m, i, e) if (strcmp(str_at(e, "kind"), kind) == 0 &&
                                    strcmp(str_at(e, "tool"), tool) == 0) return;
    json_array_append_new(m, json_pack("{s:s,s:o}", "kind", kind, "tool", short_str(tool, 64)));
}

static void check_scope(json_t *r, json_t *t, const lk_hdp_tools_t *tools, lk_hdp_facts_t *f)
{
    json_t *auth = json_object_get(json_object_get(t, "scope"), "authorized_tools");
    if (!tools || !json_is_array(auth)) return;
    for (size_t i = 0; i < tools->n_defs; i++)
        if (tools->defs[i] && !in_list(auth, tools->defs[i]))
            add_mismatch(r, f, "tool_definition", tools->defs[i]);
    for (size_t i = 0; i < tools->n_calls; i++)
        if (tools->calls[i] && !in_list(auth, tools->calls[i]))
            add_mismatch(r, f, "tool_call", tools->calls[i]);
}

json_t *lk_hdp_verify_token(json_t *t, int64_t now_ms, lk_hdp_issuer_fn issuer, void *ud,
                            const lk_hdp_tools_t *tools, lk_hdp_facts_t *facts)
{
    lk_hdp_facts_t dummy;
    if (!facts) facts = &dummy;
    memset(facts, 0, sizeof *facts);
    facts->present = 1;
    if (sodium_init() < 0) return NULL;
    json_t *r = new_result();
    if (!r) return NULL;
    char buf[160];
    const char *bad = schema_error(t, buf, sizeof buf);
    if (bad) {
        set_reason(r, facts, LK_HDP_MALFORMED, bad);
        return r;
    }
    summarize(r, t);
    check_scope(r, t, tools, facts);
    json_t *h = json_object_get(t, "header"), *g = json_object_get(t, "signature");
    json_t *chain = json_object_get(t, "chain");
    const char *kid = str_at(g, "kid");
    json_object_set_new(r, "issuer", json_pack("{s:o}", "kid", short_str(kid, 128)));

    if (strcmp(json_string_value(json_object_get(t, "hdp")), "0.1") != 0 ||
        strcmp(str_at(h, "version"), "0.1") != 0) {
        set_reason(r, facts, LK_HDP_UNSUPPORTED_VERSION, "only HDP 0.1 is supported");
        return r;
    }
    if (strcmp(str_at(g, "alg"), "Ed25519") != 0) {
        set_reason(r, facts, LK_HDP_UNSUPPORTED_ALG, "only Ed25519 signatures are supported");
        return r;
    }
    lk_hdp_issuer_t is;
    memset(&is, 0, sizeof is);
    int found = issuer ? issuer(ud, kid, &is) : 0;
    if (found < 0) {
        set_reason(r, facts, LK_HDP_ISSUER_UNAVAILABLE, "trusted issuers could not be read");
        return r;
    }
    if (found == 0) {
        set_reason(r, facts, LK_HDP_UNKNOWN_ISSUER, "signature.kid is not a trusted issuer of this tenant");
        return r;
    }
    json_object_set_new(json_object_get(r, "issuer"), "name", short_str(is.name, 128));
    if (is.revoked) {
        set_reason(r, facts, LK_HDP_ISSUER_REVOKED, "the issuer was revoked");
        return r;
    }
    if (!root_ok(t, is.pk)) {
        set_reason(r, facts, LK_HDP_BAD_SIGNATURE, "the root signature does not verify");
        return r;
    }
    size_t n = json_array_size(chain);
    json_t *maxh = json_object_get(json_object_get(t, "scope"), "max_hops");
    if ((maxh && (json_int_t)n > json_integer_value(maxh)) || n > LK_HDP_MAX_HOPS) {
        snprintf(buf, sizeof buf, "%zu hops, scope.max_hops %lld (Lumkey verifies at most %d)", n,
                 maxh ? (long long)json_integer_value(maxh) : -1LL, LK_HDP_MAX_HOPS);
        set_reason(r, facts, LK_HDP_TOO_MANY_HOPS, buf);
        return r;
    }
    long long prev_ts = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *hop = json_array_get(chain, i);
        long long seq = json_integer_value(json_object_get(hop, "seq"));
        long long parent = json_integer_value(json_object_get(hop, "parent_hop"));
        long long ts = json_integer_value(json_object_get(hop, "timestamp"));
        const char *what = NULL;
        if (seq != (long long)i + 1)
            what = "seq is not consecutive";
        else if (parent >= seq)
            what = "parent_hop does not precede the hop";
        else if (ts < prev_ts)
            what = "timestamp goes backwards";
        else if (!hop_ok(t, i, is.pk))
            what = "hop signature does not verify";
        if (what) {
            snprintf(buf, sizeof buf, "hop %zu: %s", i + 1, what);
            set_reason(r, facts, LK_HDP_CHAIN_BROKEN, buf);
            return r;
        }
        prev_ts = ts;
    }
    if (json_integer_value(json_object_get(h, "expires_at")) < now_ms) {
        set_reason(r, facts, LK_HDP_EXPIRED, "header.expires_at is in the past");
        return r;
    }
    set_reason(r, facts, LK_HDP_OK, NULL);
    return r;
}

json_t *lk_hdp_verify(const char *value, size_t len, int64_t now_ms, lk_hdp_issuer_fn issuer, void *ud,
                      const lk_hdp_tools_t *tools, lk_hdp_facts_t *facts)
{
    lk_hdp_reason_t why;
    json_t *t = lk_hdp_decode(value, len, &why);
    if (!t)
        return lk_hdp_result_reason(why,
                                    why == LK_HDP_TRUNCATED   ? "the token ends before its JSON does"
                                    : len > LK_HDP_MAX_HEADER ? "the header value is too long"
                                                              : "not base64url-encoded token JSON",
                                    facts);
    json_t *r = lk_hdp_verify_token(t, now_ms, issuer, ud, tools, facts);
    json_decref(t);
    return r;
}

int lk_hdp_parse_pubkey(const char *s, unsigned char pk[32])
{
    size_t n = s ? strlen(s) : 0, got = 0;
    const char *end = NULL;
    if (n == 64 && sodium_hex2bin(pk, 32, s, n, NULL, &got, &end) == 0 && got == 32 && end == s + n) return 0;
    unsigned char tmp[40];
    static const int variants[] = {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
                                   sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        if (sodium_base642bin(tmp, sizeof tmp, s, n, NULL, &got, &end, variants[v]) == 0 && end == s + n &&
            got == 32) {
            memcpy(pk, tmp, 32);
            return 0;
        }
    }
    return -1;
}
