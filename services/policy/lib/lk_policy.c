/*  lk_policy - compiling a policy document and evaluating it on a whole request
 *  or answer body (the stream lives in policy_stream.c).
 *
 *  Knows nothing about sockets, the database or HTTP.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

static void fail(lk_policy_error_t *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(lk_policy_error_t *err, const char *path, const char *fmt, ...)
{
    if (!err) return;
    snprintf(err->path, sizeof err->path, "%s", path);
    err->line = err->column = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

static void globs_free(globs_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->v[i]);
    free(g->v);
    g->v = NULL;
    g->n = 0;
}

void lk_policy_free(lk_policy_t **pp)
{
    if (!pp || !*pp) return;
    lk_policy_t *p = *pp;
    for (size_t i = 0; i < p->n_rules; i++) {
        rule_t *r = &p->rules[i];
        globs_free(&r->model);
        globs_free(&r->provider);
        globs_free(&r->team);
        globs_free(&r->agent);
        globs_free(&r->user);
        globs_free(&r->hdp_reason);
        globs_free(&r->tool_name);
        free(r->text);
        for (size_t j = 0; j < r->n_args; j++) {
            free(r->args[j].path);
            json_decref(r->args[j].equals);
        }
        free(r->args);
        for (size_t j = 0; j < r->n_hdrs; j++) {
            free(r->hdrs[j].name);
            globs_free(&r->hdrs[j].g);
        }
        free(r->hdrs);
    }
    free(p->rules);
    for (size_t i = 0; i < p->n_pats; i++)
        pcre2_code_free(p->pats[i].re);
    for (size_t i = 0; i < p->n_pats; i++)
        free(p->pats[i].src);
    free(p->pats);
    policy_hs_free(p);
    for (size_t i = 0; i < p->n_prices; i++)
        free(p->prices[i].glob);
    free(p->prices);
    free(p);
    *pp = NULL;
}

/* ---- compiling ---------------------------------------------------------------------------- */

/* Keys of obj must all be in the NULL-terminated list. */
static int only_keys(json_t *obj, const char *path, const char *const *allowed, lk_policy_error_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, k) == 0) ok = 1;
        if (!ok) {
            fail(err, path, "unknown key \"%.60s\"", k);
            return -1;
        }
    }
    return 0;
}

static int add_pattern(lk_policy_t *p, const char *src, size_t len, int pii, int rule, const char *path,
                       lk_policy_error_t *err)
{
    if (p->n_pats >= PII_N + POLICY_MAX_PATTERNS) {
        fail(err, path, "too many patterns (at most %d regexes per policy)", POLICY_MAX_PATTERNS);
        return -1;
    }
    if (len > POLICY_MAX_PATTERN_LEN) {
        fail(err, path, "pattern longer than %d bytes", POLICY_MAX_PATTERN_LEN);
        return -1;
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, len, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    if (!re) {
        char m[160];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)m, sizeof m);
        fail(err, path, "invalid regex at offset %zu: %s", (size_t)eo, m);
        return -1;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD); /* interpreter if no JIT */
    pat_t *np = realloc(p->pats, (p->n_pats + 1) * sizeof *np);
    if (!np) {
        pcre2_code_free(re);
        fail(err, path, "out of memory");
        return -1;
    }
    p->pats = np;
    p->pats[p->n_pats] = (pat_t){.re = re, .pii = pii, .rule = rule, .src = strndup(src, len)};
    if (!p->pats[p->n_pats].src || strlen(p->pats[p->n_pats].src) != len) { /* NUL inside: PCRE2 only */
        free(p->pats[p->n_pats].src);
        p->pats[p->n_pats].src = NULL;
    }
    return (int)p->n_pats++;
}

static int parse_globs(json_t *v, const char *path, globs_t *g, lk_policy_error_t *err)
{
    if (json_is_string(v)) {
        g->v = calloc(1, sizeof *g->v);
        if (!g->v || !(g->v[0] = strdup(json_string_value(v)))) goto oom;
        g->n = 1;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        fail(err, path, "must be a non-empty array of strings");
        return -1;
    }
    if (json_array_size(v) > POLICY_MAX_LIST) {
        fail(err, path, "more than %d entries", POLICY_MAX_LIST);
        return -1;
    }
    g->v = calloc(json_array_size(v), sizeof *g->v);
    if (!g->v) goto oom;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > 256) {
            char ep[160];
            snprintf(ep, sizeof ep, "%.100s[%zu]", path, i);
            fail(err, ep, "must be a non-empty string of at most 256 bytes");
            return -1;
        }
        if (!(g->v[g->n++] = strdup(json_string_value(e)))) goto oom;
    }
    return 0;
oom:
    fail(err, path, "out of memory");
    return -1;
}

static int id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int parse_nonneg(json_t *v, const char *path, double *out, lk_policy_error_t *err)
{
    if (!json_is_number(v) || json_number_value(v) < 0 || !isfinite(json_number_value(v)) ||
        json_number_value(v) > 1e12) {
        fail(err, path, "must be a number between 0 and 1e12");
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int parse_tool(lk_policy_t *p, rule_t *r, int ri, json_t *t, const char *path, lk_policy_error_t *err)
{
    static const char *const keys[] = {"name", "args", NULL};
    char sub[160];
    if (!json_is_object(t)) {
        fail(err, path, "must be an object");
        return -1;
    }
    if (only_keys(t, path, keys, err)) return -1;
    r->has_tool = 1;
    json_t *v;
    if ((v = json_object_get(t, "name"))) {
        snprintf(sub, sizeof sub, "%.100s.name", path);
        if (parse_globs(v, sub, &r->tool_name, err)) return -1;
    }
    if ((v = json_object_get(t, "args"))) {
        snprintf(sub, sizeof sub, "%.100s.args", path);
        if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 64) {
            fail(err, sub, "must be a non-empty array of at most 64 conditions");
            return -1;
        }
        r->args = calloc(json_array_size(v), sizeof *r->args);
        if (!r->args) {
            fail(err, sub, "out of memory");
            return -1;
        }
        size_t i;
        json_t *a;
        json_array_foreach(v, i, a)
        {
            static const char *const akeys[] = {"path", "equals", "regex", NULL};
            char ap[160];
            snprintf(ap, sizeof ap, "%.100s.args[%zu]", path, i);
            targ_t *ta = &r->args[r->n_args++];
            ta->pat = -1;
            if (!json_is_object(a)) {
                fail(err, ap, "must be an object");
                return -1;
            }
            if (only_keys(a, ap, akeys, err)) return -1;
            json_t *pv = json_object_get(a, "path"), *eq = json_object_get(a, "equals"),
                   *rx = json_object_get(a, "regex");
            if (!json_is_string(pv) || json_string_length(pv) == 0 || json_string_length(pv) > 255) {
                snprintf(sub, sizeof sub, "%.100s.path", ap);
                fail(err, sub, "must be a non-empty string (dotted path, [n] for arrays)");
                return -1;
            }
            if (!!eq == !!rx) {
                fail(err, ap, "needs exactly one of \"equals\" and \"regex\"");
                return -1;
            }
            if (!(ta->path = strdup(json_string_value(pv)))) {
                fail(err, ap, "out of memory");
                return -1;
            }
            if (eq) ta->equals = json_incref(eq);
            if (rx) {
                snprintf(sub, sizeof sub, "%.100s.regex", ap);
                if (!json_is_string(rx)) {
                    fail(err, sub, "must be a string");
                    return -1;
                }
                int pi = add_pattern(p, json_string_value(rx), json_string_length(rx), -1, ri, sub, err);
                if (pi < 0) return -1;
                ta->pat = pi;
            }
        }
    }
    return 0;
}

/* when.hdp (opt-in, docs/hdp.md): {present, verified, scope_mismatch: bool, reason: glob(s)}. */
static int parse_hdp(rule_t *r, json_t *v, const char *path, lk_policy_error_t *err)
{
    static const char *const hkeys[] = {"present", "verified", "scope_mismatch", "reason", NULL};
    static const char *const bkeys[] = {"present", "verified", "scope_mismatch"};
    int *dst[] = {&r->hdp_present, &r->hdp_verified, &r->hdp_mismatch};
    char sub[160];
    if (!json_is_object(v) || json_object_size(v) == 0) {
        fail(err, path, "must be a non-empty object (present, verified, scope_mismatch, reason)");
        return -1;
    }
    if (only_keys(v, path, hkeys, err)) return -1;
    for (size_t i = 0; i < 3; i++) {
        json_t *b = json_object_get(v, bkeys[i]);
        if (!b) continue;
        if (!json_is_boolean(b)) {
            snprintf(sub, sizeof sub, "%.100s.%s", path, bkeys[i]);
            fail(err, sub, "must be true or false");
            return -1;
        }
        *dst[i] = json_is_true(b);
    }
    json_t *g = json_object_get(v, "reason");
    if (g) {
        snprintf(sub, sizeof sub, "%.100s.reason", path);
        if (parse_globs(g, sub, &r->hdp_reason, err)) return -1;
    }
    return 0;
}

static const char *const ANOM_REASONS[] = {"rate", "tokens", "spend",      "prompt_len", "model", "tool",
                                           "ip",   "hour",   "block_rate", "error_rate", NULL};

unsigned lk_policy_anomaly_reason(const char *name)
{
    for (int i = 0; name && ANOM_REASONS[i]; i++)
        if (strcmp(name, ANOM_REASONS[i]) == 0) return 1u << i;
    return 0;
}

/* when.anomaly: {"score_gte": 0..1, "reason": ["tool", ...]} (issue 10). */
static int parse_anomaly(rule_t *r, json_t *v, const char *path, lk_policy_error_t *err)
{
    static const char *const akeys[] = {"score_gte", "reason", NULL};
    char sub[160];
    if (!json_is_object(v) || json_object_size(v) == 0) {
        fail(err, path, "must be an object with score_gte and/or reason");
        return -1;
    }
    if (only_keys(v, path, akeys, err)) return -1;
    json_t *x;
    if ((x = json_object_get(v, "score_gte"))) {
        snprintf(sub, sizeof sub, "%.100s.score_gte", path);
        if (!json_is_number(x) || json_number_value(x) < 0 || json_number_value(x) > 1) {
            fail(err, sub, "must be a number from 0 to 1");
            return -1;
        }
        r->anom_gte = json_number_value(x);
    }
    if ((x = json_object_get(v, "reason"))) {
        snprintf(sub, sizeof sub, "%.100s.reason", path);
        if (!json_is_array(x) || json_array_size(x) == 0) {
            fail(err, sub, "must be a non-empty array of reason names");
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach(x, i, e)
        {
            unsigned bit = json_is_string(e) ? lk_policy_anomaly_reason(json_string_value(e)) : 0;
            if (!bit) {
                snprintf(sub, sizeof sub, "%.100s.reason[%zu]", path, i);
                fail(err, sub,
                     "unknown reason (rate, tokens, spend, prompt_len, model, tool, ip, hour, block_rate, "
                     "error_rate)");
                return -1;
            }
            r->anom_reasons |= bit;
        }
    }
    return 0;
}

static int parse_when(lk_policy_t *p, rule_t *r, int ri, json_t *w, const char *path, lk_policy_error_t *err)
{
    static const char *const keys[] = {"model",         "provider", "text",   "pii",
                                       "tool",          "metadata", "header", "tokens_over",
                                       "cost_over_usd", "anomaly",  "hdp",    NULL};
    char sub[160];
    json_t *v;
    if (!json_is_object(w)) {
        fail(err, path, "must be an object");
        return -1;
    }
    if (only_keys(w, path, keys, err)) return -1;
    if ((v = json_object_get(w, "model"))) {
        snprintf(sub, sizeof sub, "%.100s.model", path);
        if (parse_globs(v, sub, &r->model, err)) return -1;
    }
    if ((v = json_object_get(w, "provider"))) {
        snprintf(sub, sizeof sub, "%.100s.provider", path);
        if (parse_globs(v, sub, &r->provider, err)) return -1;
    }
    if ((v = json_object_get(w, "text"))) {
        static const char *const tkeys[] = {"regex", NULL};
        snprintf(sub, sizeof sub, "%.100s.text", path);
        if (!json_is_object(v)) {
            fail(err, sub, "must be an object");
            return -1;
        }
        if (only_keys(v, sub, tkeys, err)) return -1;
        json_t *rx = json_object_get(v, "regex");
        snprintf(sub, sizeof sub, "%.100s.text.regex", path);
        if (!json_is_array(rx) || json_array_size(rx) == 0) {
            fail(err, sub, "must be a non-empty array of regexes");
            return -1;
        }
        if (json_array_size(rx) > POLICY_MAX_PATTERNS) {
            fail(err, sub, "more than %d regexes", POLICY_MAX_PATTERNS);
            return -1;
        }
        r->text = calloc(json_array_size(rx), sizeof *r->text);
        if (!r->text) {
            fail(err, sub, "out of memory");
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach(rx, i, e)
        {
            snprintf(sub, sizeof sub, "%.100s.text.regex[%zu]", path, i);
            if (!json_is_string(e) || json_string_length(e) == 0) {
                fail(err, sub, "must be a non-empty string");
                return -1;
            }
            int pi = add_pattern(p, json_string_value(e), json_string_length(e), -1, ri, sub, err);
            if (pi < 0) return -1;
            r->text[r->n_text++] = pi;
        }
    }
    if ((v = json_object_get(w, "pii"))) {
        snprintf(sub, sizeof sub, "%.100s.pii", path);
        if (!json_is_array(v) || json_array_size(v) == 0) {
            fail(err, sub, "must be a non-empty array of detector names");
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            int d = json_is_string(e) ? pii_index(json_string_value(e)) : -1;
            if (d < 0) {
                snprintf(sub, sizeof sub, "%.100s.pii[%zu]", path, i);
                fail(err, sub,
                     "unknown detector (email, phone, card, ssn, iban, ip, secret, private_key, jwt)");
                return -1;
            }
            r->pii |= 1u << d;
        }
    }
    if ((v = json_object_get(w, "tool"))) {
        snprintf(sub, sizeof sub, "%.100s.tool", path);
        if (parse_tool(p, r, ri, v, sub, err)) return -1;
    }
    if ((v = json_object_get(w, "metadata"))) {
        static const char *const mkeys[] = {"team", "agent", "user", NULL};
        snprintf(sub, sizeof sub, "%.100s.metadata", path);
        if (!json_is_object(v)) {
            fail(err, sub, "must be an object");
            return -1;
        }
        if (only_keys(v, sub, mkeys, err)) return -1;
        json_t *m;
        if ((m = json_object_get(v, "team"))) {
            snprintf(sub, sizeof sub, "%.100s.metadata.team", path);
            if (parse_globs(m, sub, &r->team, err)) return -1;
        }
        if ((m = json_object_get(v, "agent"))) {
            snprintf(sub, sizeof sub, "%.100s.metadata.agent", path);
            if (parse_globs(m, sub, &r->agent, err)) return -1;
        }
        if ((m = json_object_get(v, "user"))) {
            snprintf(sub, sizeof sub, "%.100s.metadata.user", path);
            if (parse_globs(m, sub, &r->user, err)) return -1;
        }
    }
    if ((v = json_object_get(w, "header"))) {
        snprintf(sub, sizeof sub, "%.100s.header", path);
        if (!json_is_object(v) || json_object_size(v) == 0 || json_object_size(v) > 64) {
            fail(err, sub, "must be a non-empty object of at most 64 header names");
            return -1;
        }
        r->hdrs = calloc(json_object_size(v), sizeof *r->hdrs);
        if (!r->hdrs) {
            fail(err, sub, "out of memory");
            return -1;
        }
        const char *k;
        json_t *g;
        json_object_foreach(v, k, g)
        {
            snprintf(sub, sizeof sub, "%.80s.header.%.60s", path, k);
            hdr_t *h = &r->hdrs[r->n_hdrs++];
            if (!(h->name = strdup(k))) {
                fail(err, sub, "out of memory");
                return -1;
            }
            for (char *c = h->name; *c; c++)
                if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
            if (parse_globs(g, sub, &h->g, err)) return -1;
        }
    }
    if ((v = json_object_get(w, "hdp"))) {
        snprintf(sub, sizeof sub, "%.100s.hdp", path);
        if (parse_hdp(r, v, sub, err)) return -1;
    }
    if ((v = json_object_get(w, "tokens_over"))) {
        snprintf(sub, sizeof sub, "%.100s.tokens_over", path);
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            fail(err, sub, "must be a non-negative integer");
            return -1;
        }
        r->tokens_over = json_integer_value(v);
    }
    if ((v = json_object_get(w, "cost_over_usd"))) {
        double d;
        snprintf(sub, sizeof sub, "%.100s.cost_over_usd", path);
        if (parse_nonneg(v, sub, &d, err)) return -1;
        r->cost_over_micro = llround(d * 1e6);
    }
    if ((v = json_object_get(w, "anomaly"))) {
        snprintf(sub, sizeof sub, "%.100s.anomaly", path);
        if (parse_anomaly(r, v, sub, err)) return -1;
        if (r->on & ON_ANSWER) {
            fail(err, sub, "applies to requests only (the rule's \"on\" must be \"request\")");
            return -1;
        }
    }
    return 0;
}

static int parse_rule(lk_policy_t *p, int ri, json_t *jr, lk_policy_error_t *err)
{
    static const char *const keys[] = {"id", "on", "when", "action", "message", "dry_run", NULL};
    static const char *const acts[] = {"allow", "log", "redact", "hold", "block"};
    char path[64], sub[160];
    rule_t *r = &p->rules[ri];
    r->tokens_over = r->cost_over_micro = -1;
    r->hdp_present = r->hdp_verified = r->hdp_mismatch = -1;
    r->anom_gte = -1;
    snprintf(path, sizeof path, "rules[%d]", ri);
    if (!json_is_object(jr)) {
        fail(err, path, "must be an object");
        return -1;
    }
    if (only_keys(jr, path, keys, err)) return -1;
    json_t *v = json_object_get(jr, "id");
    snprintf(sub, sizeof sub, "%.100s.id", path);
    if (!json_is_string(v) || !id_ok(json_string_value(v))) {
        fail(err, sub, "required: 1-63 characters of A-Z a-z 0-9 _ . -");
        return -1;
    }
    snprintf(r->id, sizeof r->id, "%s", json_string_value(v));
    for (int j = 0; j < ri; j++)
        if (strcmp(p->rules[j].id, r->id) == 0) {
            fail(err, sub, "duplicate rule id \"%s\" (also rules[%d])", r->id, j);
            return -1;
        }
    r->on = ON_REQUEST;
    if ((v = json_object_get(jr, "on"))) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, "request") == 0)
            r->on = ON_REQUEST;
        else if (strcmp(s, "answer") == 0)
            r->on = ON_ANSWER;
        else if (strcmp(s, "both") == 0)
            r->on = ON_REQUEST | ON_ANSWER;
        else {
            snprintf(sub, sizeof sub, "%.100s.on", path);
            fail(err, sub, "must be \"request\", \"answer\" or \"both\"");
            return -1;
        }
    }
    v = json_object_get(jr, "action");
    r->action = (lk_action_t)-1;
    for (int a = 0; a < 5; a++)
        if (json_is_string(v) && strcmp(json_string_value(v), acts[a]) == 0) r->action = (lk_action_t)a;
    if ((int)r->action < 0) {
        snprintf(sub, sizeof sub, "%.100s.action", path);
        fail(err, sub, "required: \"allow\", \"log\", \"redact\", \"hold\" or \"block\"");
        return -1;
    }
    if ((v = json_object_get(jr, "message"))) {
        snprintf(sub, sizeof sub, "%.100s.message", path);
        if (!json_is_string(v) || json_string_length(v) >= sizeof r->msg) {
            fail(err, sub, "must be a string of at most %zu bytes", sizeof r->msg - 1);
            return -1;
        }
        snprintf(r->msg, sizeof r->msg, "%s", json_string_value(v));
    }
    if ((v = json_object_get(jr, "dry_run"))) {
        if (!json_is_boolean(v)) {
            snprintf(sub, sizeof sub, "%.100s.dry_run", path);
            fail(err, sub, "must be true or false");
            return -1;
        }
        r->dry = json_is_true(v);
    }
    if ((v = json_object_get(jr, "when"))) {
        snprintf(sub, sizeof sub, "%.100s.when", path);
        if (parse_when(p, r, ri, v, sub, err)) return -1;
    }
    return 0;
}

static int parse_limits(lk_policy_t *p, json_t *l, lk_policy_error_t *err)
{
    static const char *const keys[] = {
        "requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month", "per", NULL};
    if (!json_is_object(l)) {
        fail(err, "limits", "must be an object");
        return -1;
    }
    if (only_keys(l, "limits", keys, err)) return -1;
    json_t *v;
    const char *ik[] = {"requests_per_minute", "tokens_per_minute"};
    int64_t *iv[] = {&p->limits.requests_per_minute, &p->limits.tokens_per_minute};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(l, ik[i]))) {
            char sub[64];
            snprintf(sub, sizeof sub, "limits.%s", ik[i]);
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                fail(err, sub, "must be a non-negative integer");
                return -1;
            }
            *iv[i] = json_integer_value(v);
        }
    const char *uk[] = {"usd_per_day", "usd_per_month"};
    int64_t *uv[] = {&p->limits.microusd_per_day, &p->limits.microusd_per_month};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(l, uk[i]))) {
            char sub[64];
            double d;
            snprintf(sub, sizeof sub, "limits.%s", uk[i]);
            if (parse_nonneg(v, sub, &d, err)) return -1;
            *uv[i] = llround(d * 1e6);
        }
    if ((v = json_object_get(l, "per"))) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, "key") == 0)
            p->limits.per_team = 0;
        else if (strcmp(s, "team") == 0)
            p->limits.per_team = 1;
        else {
            fail(err, "limits.per", "must be \"key\" or \"team\"");
            return -1;
        }
    }
    return 0;
}

static int parse_prices(lk_policy_t *p, json_t *pr, lk_policy_error_t *err)
{
    if (!json_is_object(pr) || json_object_size(pr) > POLICY_MAX_LIST) {
        fail(err, "prices", "must be an object of at most %d model globs", POLICY_MAX_LIST);
        return -1;
    }
    p->prices = calloc(json_object_size(pr) + 1, sizeof *p->prices);
    if (!p->prices) {
        fail(err, "prices", "out of memory");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(pr, k, v)
    {
        static const char *const keys[] = {"input_per_mtok", "output_per_mtok", NULL};
        char sub[160];
        snprintf(sub, sizeof sub, "prices.%.100s", k);
        price_t *e = &p->prices[p->n_prices++];
        if (!(e->glob = strdup(k))) {
            fail(err, sub, "out of memory");
            return -1;
        }
        if (!json_is_object(v)) {
            fail(err, sub, "must be an object {input_per_mtok, output_per_mtok}");
            return -1;
        }
        if (only_keys(v, sub, keys, err)) return -1;
        json_t *in = json_object_get(v, "input_per_mtok"), *out = json_object_get(v, "output_per_mtok");
        char sub2[200];
        snprintf(sub2, sizeof sub2, "%.100s.input_per_mtok", sub);
        if (!in) {
            fail(err, sub2, "required");
            return -1;
        }
        if (parse_nonneg(in, sub2, &e->in, err)) return -1;
        snprintf(sub2, sizeof sub2, "%.100s.output_per_mtok", sub);
        if (!out) {
            fail(err, sub2, "required");
            return -1;
        }
        if (parse_nonneg(out, sub2, &e->out, err)) return -1;
    }
    return 0;
}

lk_policy_t *lk_policy_compile(const char *doc, size_t len, lk_policy_error_t *err)
{
    static const char *const keys[] = {"name", "dry_run", "rules", "limits", "prices", NULL};
    lk_policy_error_t dummy;
    if (!err) err = &dummy;
    memset(err, 0, sizeof *err);
    if (!doc) {
        fail(err, "", "no document");
        return NULL;
    }
    if (len > POLICY_MAX_DOC) {
        fail(err, "", "document larger than %d bytes", POLICY_MAX_DOC);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fail(err, "", "JSON syntax: %.200s", je.text);
        err->line = je.line > 0 ? je.line : 1;
        err->column = je.column > 0 ? je.column : 1;
        return NULL;
    }
    lk_policy_t *p = calloc(1, sizeof *p);
    if (!p) {
        fail(err, "", "out of memory");
        json_decref(root);
        return NULL;
    }
    for (int d = 0; d < PII_N; d++)
        if (add_pattern(p, pii_regex(d), strlen(pii_regex(d)), d, -1, "", err) != d) goto bad;
    if (!json_is_object(root)) {
        fail(err, "", "the document must be a JSON object");
        goto bad;
    }
    if (only_keys(root, "", keys, err)) goto bad;
    json_t *v;
    if ((v = json_object_get(root, "name")) && !json_is_string(v)) {
        fail(err, "name", "must be a string");
        goto bad;
    }
    if ((v = json_object_get(root, "dry_run"))) {
        if (!json_is_boolean(v)) {
            fail(err, "dry_run", "must be true or false");
            goto bad;
        }
        p->dry = json_is_true(v);
    }
    json_t *rules = json_object_get(root, "rules");
    if (rules) {
        if (!json_is_array(rules)) {
            fail(err, "rules", "must be an array");
            goto bad;
        }
        if (json_array_size(rules) > POLICY_MAX_RULES) {
            fail(err, "rules", "more than %d rules", POLICY_MAX_RULES);
            goto bad;
        }
        p->rules = calloc(json_array_size(rules) + 1, sizeof *p->rules);
        if (!p->rules) {
            fail(err, "rules", "out of memory");
            goto bad;
        }
        size_t i;
        json_t *jr;
        json_array_foreach(rules, i, jr)
        {
            p->n_rules++;
            if (parse_rule(p, (int)i, jr, err)) goto bad;
            if (p->rules[i].on & ON_ANSWER) p->answer_rules = 1;
        }
    }
    if ((v = json_object_get(root, "limits")) && parse_limits(p, v, err)) goto bad;
    if ((v = json_object_get(root, "prices")) && parse_prices(p, v, err)) goto bad;
    policy_hs_build(p);
    json_decref(root);
    return p;
bad:
    json_decref(root);
    lk_policy_free(&p);
    return NULL;
}

void lk_policy_limits(const lk_policy_t *p, lk_policy_limits_t *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (p) *out = p->limits;
}

void jansson_free(void *p)
{
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    if (p) f(p);
}

char *json_dumps_malloc(const json_t *j, size_t flags)
{
    char *d = json_dumps(j, flags);
    char *out = d ? strdup(d) : NULL;
    jansson_free(d);
    return out;
}

int lk_policy_price(const lk_policy_t *p, const char *model, double *in_per_mtok, double *out_per_mtok)
{
    for (size_t i = 0; p && model && i < p->n_prices; i++)
        if (glob_any(&(globs_t){.v = &p->prices[i].glob, .n = 1}, model)) {
            *in_per_mtok = p->prices[i].in;
            *out_per_mtok = p->prices[i].out;
            return 1;
        }
    return 0;
}

int lk_policy_has_answer_rules(const lk_policy_t *p)
{
    return p ? p->answer_rules : 0;
}

const char *lk_policy_action_name(lk_action_t a)
{
    switch (a) {
    case LK_ACT_ALLOW:
        return "allow";
    case LK_ACT_LOG:
        return "log";
    case LK_ACT_REDACT:
        return "redact";
    case LK_ACT_HOLD:
        return "hold";
    case LK_ACT_BLOCK:
        return "block";
    }
    return "?";
}

void lk_policy_result_clear(lk_policy_result_t *r)
{
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* ---- evaluation --------------------------------------------------------------------------- */

int rule_static_ok(const evalctx_t *e, const rule_t *r)
{
    const lk_policy_ctx_t *c = e->ctx;
    if (!(r->on & e->side)) return 0;
    if (r->model.n && !glob_any(&r->model, e->model)) return 0;
    if (r->provider.n && !(glob_any(&r->provider, c ? c->provider_kind : NULL) ||
                           glob_any(&r->provider, c ? c->provider_id : NULL)))
        return 0;
    if (r->team.n && !glob_any(&r->team, c ? c->team : NULL)) return 0;
    if (r->agent.n && !glob_any(&r->agent, c ? c->agent : NULL)) return 0;
    if (r->user.n && !glob_any(&r->user, c ? c->user : NULL)) return 0;
    for (size_t i = 0; i < r->n_hdrs; i++) {
        int ok = 0;
        for (size_t h = 0; c && c->headers && h < c->n_headers && !ok; h++)
            if (c->headers[h][0] && strcasecmp(c->headers[h][0], r->hdrs[i].name) == 0)
                ok = glob_any(&r->hdrs[i].g, c->headers[h][1]);
        if (!ok) return 0;
    }
    const lk_policy_hdp_t *h = c ? c->hdp : NULL;
    if (r->hdp_present >= 0 && r->hdp_present != (h && h->present)) return 0;
    if (r->hdp_verified >= 0 && r->hdp_verified != (h && h->verified)) return 0;
    if (r->hdp_mismatch >= 0 && r->hdp_mismatch != (h && h->scope_mismatch)) return 0;
    if (r->hdp_reason.n && !glob_any(&r->hdp_reason, h && h->present ? h->reason : NULL)) return 0;
    if (r->tokens_over >= 0 && !(e->est_tokens > r->tokens_over)) return 0;
    if (r->cost_over_micro >= 0 && !(e->est_micro >= 0 && e->est_micro > r->cost_over_micro)) return 0;
    if (r->anom_gte >= 0 && !(c && c->has_anomaly && c->anomaly_score >= r->anom_gte)) return 0;
    if (r->anom_reasons && !(c && c->has_anomaly && (c->anomaly_reasons & r->anom_reasons))) return 0;
    return 1;
}

static int call_ok(const lk_policy_t *p, const rule_t *r, const vcall_t *c, pcre2_match_data *md)
{
    if (r->tool_name.n && !glob_any(&r->tool_name, c->name)) return 0;
    for (size_t i = 0; i < r->n_args; i++) {
        json_t *v = c->args ? json_path_get(c->args, r->args[i].path) : NULL;
        if (!v) return 0;
        if (r->args[i].equals) {
            if (!json_equal(v, r->args[i].equals)) return 0;
        } else {
            size_t a, b;
            if (!json_is_string(v) || pat_next(p, r->args[i].pat, json_string_value(v), json_string_length(v),
                                               0, 0, md, &a, &b) != 1)
                return 0;
        }
    }
    return 1;
}

int rule_tool_ok(const lk_policy_t *p, const rule_t *r, const vcall_t *calls, size_t n_calls,
                 const char *const *defs, size_t n_defs, pcre2_match_data *md)
{
    for (size_t i = 0; i < n_calls; i++)
        if (call_ok(p, r, &calls[i], md)) return 1;
    if (r->n_args == 0)
        for (size_t i = 0; i < n_defs; i++)
            if (!r->tool_name.n || glob_any(&r->tool_name, defs[i])) return 1;
    return 0;
}

void combine(const lk_policy_t *p, const unsigned char *matched, lk_policy_result_t *r)
{
    int best = -1, best_would = -1;
    for (size_t i = 0; i < p->n_rules; i++) {
        if (!matched[i]) continue;
        const rule_t *ru = &p->rules[i];
        int dry = p->dry || ru->dry;
        if (best_would < 0 || ru->action > p->rules[best_would].action) best_would = (int)i;
        if (!dry && (best < 0 || ru->action > p->rules[best].action)) best = (int)i;
    }
    lk_action_t act = best >= 0 ? p->rules[best].action : LK_ACT_ALLOW;
    lk_action_t would = best_would >= 0 ? p->rules[best_would].action : LK_ACT_ALLOW;
    if (best_would >= 0 && act < LK_ACT_LOG && would > act) act = LK_ACT_LOG; /* a dry-run match is logged */
    r->action = act;
    r->would = would > act ? would : act;
    int src = best;
    if (act <= LK_ACT_LOG && best_would >= 0 && (best < 0 || would > p->rules[best].action)) src = best_would;
    if (src >= 0) {
        snprintf(r->rule_id, sizeof r->rule_id, "%s", p->rules[src].id);
        snprintf(r->message, sizeof r->message, "%s", p->rules[src].msg);
    } else {
        r->rule_id[0] = r->message[0] = 0;
    }
}

typedef struct {
    size_t item, a, b;
    int pat;
} span_t;

static int span_cmp(const void *x, const void *y)
{
    const span_t *s = x, *t = y;
    if (s->item != t->item) return s->item < t->item ? -1 : 1;
    if (s->a != t->a) return s->a < t->a ? -1 : 1;
    return s->b > t->b ? -1 : s->b < t->b;
}

/* Masks the spans (sorted) in the view's strings; returns the count, -1 on OOM. */
static int apply_spans(const lk_policy_t *p, view_t *v, span_t *sp, size_t n)
{
    int count = 0;
    size_t i = 0;
    while (i < n) {
        size_t item = sp[i].item;
        json_t *js = v->items[item].str;
        const char *s = json_string_value(js);
        size_t len = json_string_length(js), pos = 0, cap = len + 64, olen = 0;
        char *o = malloc(cap);
        if (!o) return -1;
        for (; i < n && sp[i].item == item; i++) {
            if (sp[i].a < pos) continue; /* overlaps the previous span: merged into it */
            char lab[96];
            rule_label(p, sp[i].pat, lab, sizeof lab);
            size_t ll = strlen(lab), need = olen + (sp[i].a - pos) + ll + (len - sp[i].b) + 1;
            if (need > cap) {
                char *no = realloc(o, need + 64);
                if (!no) {
                    free(o);
                    return -1;
                }
                o = no;
                cap = need + 64;
            }
            memcpy(o + olen, s + pos, sp[i].a - pos);
            olen += sp[i].a - pos;
            memcpy(o + olen, lab, ll);
            olen += ll;
            pos = sp[i].b;
            /* swallow following spans that overlap this one */
            while (i + 1 < n && sp[i + 1].item == item && sp[i + 1].a < pos) {
                if (sp[i + 1].b > pos) pos = sp[i + 1].b;
                i++;
            }
            count++;
        }
        memcpy(o + olen, s + pos, len - pos);
        olen += len - pos;
        int rc = json_string_setn(js, o, olen);
        free(o);
        if (rc) return -1;
    }
    return count;
}

static int eval_view(const lk_policy_t *p, const lk_policy_ctx_t *ctx, view_t *v, int side,
                     lk_policy_result_t *r)
{
    int rc = -1;
    unsigned char *matched = calloc(p->n_rules + 1, 1), *hit = calloc(p->n_pats + 1, 1),
                  *want = calloc(p->n_pats + 1, 1);
    unsigned char *redact_pat = calloc(p->n_pats + 1, 1);
    span_t *spans = NULL;
    size_t n_spans = 0, cap_spans = 0;
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    if (!matched || !hit || !want || !redact_pat || !md) goto oom;

    evalctx_t e = {.p = p, .ctx = ctx, .side = side, .model = v->model};
    e.est_tokens = (int64_t)((v->text_bytes + 3) / 4);
    e.est_micro = -1;
    int64_t maxt = v->max_tokens >= 0 ? v->max_tokens : 4096;
    for (size_t i = 0; i < p->n_prices && v->model; i++)
        if (glob_any(&(globs_t){.v = &p->prices[i].glob, .n = 1}, v->model)) {
            e.est_micro = llround((double)e.est_tokens * p->prices[i].in + (double)maxt * p->prices[i].out);
            break;
        }
    if (side == ON_REQUEST) {
        r->est_prompt_tokens = e.est_tokens;
        r->est_max_tokens = maxt;
        r->est_microusd = e.est_micro;
    } else {
        r->est_microusd = -1;
        e.est_micro = -1; /* cost conditions are request-side */
    }

    /* which patterns to scan: those of rules whose static conditions hold */
    unsigned char *stat = calloc(p->n_rules + 1, 1);
    if (!stat) goto oom;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule_t *ru = &p->rules[i];
        if (!(stat[i] = (unsigned char)rule_static_ok(&e, ru))) continue;
        for (size_t k = 0; k < ru->n_text; k++)
            want[ru->text[k]] = 1;
        for (int d = 0; d < PII_N; d++)
            if (ru->pii & (1u << d)) want[d] = 1;
    }
    unsigned char *cand = malloc(p->n_pats + 1);
    if (!cand) {
        free(stat);
        goto oom;
    }
    for (size_t it = 0; it < v->n_items; it++) {
        const char *s = json_string_value(v->items[it].str);
        size_t len = json_string_length(v->items[it].str);
        int pre = policy_hs_candidates(p, s, len, cand) == 0; /* one multi-pattern scan of the string */
        for (size_t pi = 0; pi < p->n_pats; pi++) {
            if (!want[pi] || (pre && p->pats[pi].in_hs && !cand[pi])) continue;
            size_t off = 0, a, b;
            while (off <= len && pat_next(p, (int)pi, s, len, off, 0, md, &a, &b) == 1) {
                hit[pi] = 1;
                if (b > a) {
                    if (n_spans == cap_spans) {
                        size_t nc = cap_spans ? cap_spans * 2 : 16;
                        span_t *ns = realloc(spans, nc * sizeof *ns);
                        if (!ns) {
                            free(stat);
                            free(cand);
                            goto oom;
                        }
                        spans = ns;
                        cap_spans = nc;
                    }
                    spans[n_spans++] = (span_t){.item = it, .a = a, .b = b, .pat = (int)pi};
                    off = b;
                } else {
                    off = a + 1;
                    while (off < len && ((unsigned char)s[off] & 0xC0) == 0x80)
                        off++;
                }
            }
        }
    }
    free(cand);
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule_t *ru = &p->rules[i];
        if (!stat[i]) continue;
        int ok = 1;
        if (ru->n_text) {
            int any = 0;
            for (size_t k = 0; k < ru->n_text; k++)
                any |= hit[ru->text[k]];
            ok &= any;
        }
        if (ok && ru->pii) {
            int any = 0;
            for (int d = 0; d < PII_N; d++)
                if (ru->pii & (1u << d)) any |= hit[d];
            ok &= any;
        }
        if (ok && ru->has_tool)
            ok &= rule_tool_ok(p, ru, v->calls, v->n_calls, (const char *const *)v->defs, v->n_defs, md);
        matched[i] = (unsigned char)ok;
    }
    free(stat);
    combine(p, matched, r);
    if (r->action == LK_ACT_REDACT) {
        for (size_t i = 0; i < p->n_rules; i++) {
            const rule_t *ru = &p->rules[i];
            if (!matched[i] || ru->action != LK_ACT_REDACT || p->dry || ru->dry) continue;
            for (size_t k = 0; k < ru->n_text; k++)
                redact_pat[ru->text[k]] = 1;
            for (int d = 0; d < PII_N; d++)
                if (ru->pii & (1u << d)) redact_pat[d] = 1;
        }
        size_t k = 0;
        for (size_t i = 0; i < n_spans; i++)
            if (redact_pat[spans[i].pat]) spans[k++] = spans[i];
        if (k) qsort(spans, k, sizeof *spans, span_cmp);
        int n = apply_spans(p, v, spans, k);
        if (n < 0) goto oom;
        r->redactions = n;
        r->body = json_dumps_malloc(v->root, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_ENCODE_ANY);
        if (!r->body) goto oom;
        r->body_len = strlen(r->body);
    }
    rc = 0;
    goto done;
oom:
    snprintf(r->message, sizeof r->message, "out of memory");
done:
    pcre2_match_data_free(md);
    free(matched);
    free(hit);
    free(want);
    free(redact_pat);
    free(spans);
    return rc;
}

static int eval_root(const lk_policy_t *p, const lk_policy_ctx_t *ctx, json_t *root, lk_policy_result_t *r,
                     int side)
{
    view_t v = {0};
    char why[200];
    int rc = side == ON_REQUEST ? view_request(&v, ctx->api, root, why, sizeof why)
                                : view_answer(&v, ctx->api, root, why, sizeof why);
    if (rc == 0) {
        rc = eval_view(p, ctx, &v, side, r);
    } else {
        snprintf(r->message, sizeof r->message, "%s", why);
    }
    view_free(&v);
    if (rc != 0) {
        char m[256];
        snprintf(m, sizeof m, "%s", r->message);
        lk_policy_result_clear(r);
        r->est_microusd = -1;
        snprintf(r->message, sizeof r->message, "%s", m);
    }
    return rc;
}

int lk_policy_request_tools(lk_api_t api, const char *body, size_t len,
                            void (*cb)(void *ud, const char *name, int is_call), void *ud)
{
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    if (!root) return -1;
    view_t v = {0};
    char why[200];
    int rc = view_request(&v, api, root, why, sizeof why);
    if (rc == 0) {
        for (size_t i = 0; i < v.n_defs; i++)
            if (v.defs[i]) cb(ud, v.defs[i], 0);
        for (size_t i = 0; i < v.n_calls; i++)
            if (v.calls[i].name) cb(ud, v.calls[i].name, 1);
    }
    view_free(&v);
    json_decref(root);
    return rc == 0 ? 0 : -1;
}

static int eval_start(const lk_policy_t *p, const lk_policy_ctx_t *ctx, const void *in, lk_policy_result_t *r)
{
    if (!r) return -1;
    memset(r, 0, sizeof *r);
    r->est_microusd = -1;
    if (!p || !ctx || !in) {
        snprintf(r->message, sizeof r->message, "no policy, context or body");
        return -1;
    }
    return 0;
}

static int eval_body(const lk_policy_t *p, const lk_policy_ctx_t *ctx, const char *body, size_t len,
                     lk_policy_result_t *r, int side)
{
    if (eval_start(p, ctx, body, r) != 0) return -1;
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root) {
        snprintf(r->message, sizeof r->message, "body is not valid JSON (line %d, column %d): %.150s",
                 je.line, je.column, je.text);
        return -1;
    }
    int rc = eval_root(p, ctx, root, r, side);
    json_decref(root);
    return rc;
}

int lk_policy_eval_answer_json(const lk_policy_t *p, const lk_policy_ctx_t *ctx, json_t *root,
                               lk_policy_result_t *r)
{
    if (eval_start(p, ctx, root, r) != 0) return -1;
    return eval_root(p, ctx, root, r, ON_ANSWER);
}

int lk_policy_eval_request(const lk_policy_t *p, const lk_policy_ctx_t *ctx, const char *body, size_t len,
                           lk_policy_result_t *r)
{
    return eval_body(p, ctx, body, len, r, ON_REQUEST);
}

int lk_policy_eval_answer(const lk_policy_t *p, const lk_policy_ctx_t *ctx, const char *body, size_t len,
                          lk_policy_result_t *r)
{
    return eval_body(p, ctx, body, len, r, ON_ANSWER);
}
