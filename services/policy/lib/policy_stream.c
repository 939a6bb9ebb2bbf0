/*  policy_stream - answer-side policy on a streamed (SSE) answer, event by event.
 *
 *  Text deltas go through a hold-back buffer per choice (chat) or content block
 *  (Anthropic): the buffer is scanned with partial matching, and text is
 *  released only when no pattern can still match through it, or when the buffer
 *  exceeds LK_POLICY_STREAM_WINDOW bytes. Tool-call deltas are buffered until the
 *  call is complete, then judged, then emitted as one merged delta.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

#define SLOTS    16
#define CTX_KEEP 64 /* bytes of released text kept as left context for lookbehinds */

typedef struct {
    int used, key;
    char *buf;
    size_t len, cap, ctx;
} tbuf_t;

typedef struct {
    int used, key, tindex;
    json_t *start; /* Anthropic: the content_block_start data */
    char *id, *name;
    char *args;
    size_t args_len, args_cap;
} tcall_t;

struct lk_policy_stream {
    const lk_policy_t *p;
    lk_policy_ctx_t ctx;
    lk_policy_emit_fn emit;
    void *ud;
    lk_policy_result_t res;
    int state;
    char *model;
    unsigned char *hit, *matched, *scan, *redact, *stat;
    pcre2_match_data *md;
    tbuf_t tb[SLOTS];
    tcall_t tc[SLOTS];
    json_t *tmpl; /* chat: the last chunk without choices/usage, for synthesized chunks */
    size_t answer_bytes;
    tcall_t *held;      /* the tool call a HOLD rule stopped on, kept until lk_policy_stream_resume */
    int holds_approved; /* a human approved the text-only holds seen so far */
};

static size_t buffered(const lk_policy_stream_t *s)
{
    size_t n = 0;
    for (int i = 0; i < SLOTS; i++)
        n += s->tb[i].len + s->tc[i].args_len;
    return n;
}

static void emit_json(lk_policy_stream_t *s, const char *event, json_t *j)
{
    char *d = json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT);
    if (!d) return;
    s->emit(s->ud, event, event ? strlen(event) : 0, d, strlen(d));
    jansson_free(d);
}

static int stop_with(lk_policy_stream_t *s, int code, const char *why)
{
    if (code == LK_PSTREAM_BLOCKED || code == LK_PSTREAM_ERROR) {
        char m[320];
        if (why)
            snprintf(m, sizeof m, "%s", why);
        else if (s->res.message[0])
            snprintf(m, sizeof m, "%s", s->res.message);
        else
            snprintf(m, sizeof m, "Blocked by policy rule %s", s->res.rule_id);
        json_t *j;
        if (s->ctx.api == LK_API_MESSAGES) {
            j = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                          code == LK_PSTREAM_ERROR ? "api_error" : "permission_error", "message", m);
            if (j) emit_json(s, "error", j);
        } else {
            j = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", m, "type",
                          code == LK_PSTREAM_ERROR ? "server_error" : "policy_violation", "code",
                          code == LK_PSTREAM_ERROR ? "policy_error" : "blocked_by_policy");
            if (j) emit_json(s, NULL, j);
        }
        json_decref(j);
    }
    s->state = code;
    return code;
}

static void refresh_sets(lk_policy_stream_t *s)
{
    const lk_policy_t *p = s->p;
    evalctx_t e = {.p = p, .ctx = &s->ctx, .side = ON_ANSWER, .model = s->model, .est_micro = -1};
    e.est_tokens = (int64_t)((s->answer_bytes + 3) / 4);
    memset(s->scan, 0, p->n_pats + 1);
    memset(s->redact, 0, p->n_pats + 1);
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule_t *r = &p->rules[i];
        s->stat[i] = (unsigned char)rule_static_ok(&e, r);
        if (!s->stat[i]) continue;
        int red = r->action == LK_ACT_REDACT && !r->dry && !p->dry && !r->has_tool;
        for (size_t k = 0; k < r->n_text; k++) {
            s->scan[r->text[k]] = 1;
            if (red) s->redact[r->text[k]] = 1;
        }
        for (int d = 0; d < PII_N; d++)
            if (r->pii & (1u << d)) {
                s->scan[d] = 1;
                if (red) s->redact[d] = 1;
            }
    }
}

/* Rules over what has been seen (call: a complete tool call being judged, or NULL). */
static int evaluate(lk_policy_stream_t *s, const vcall_t *call)
{
    const lk_policy_t *p = s->p;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule_t *r = &p->rules[i];
        if (!s->stat[i] || s->matched[i]) continue;
        int ok = 1;
        if (r->n_text) {
            int any = 0;
            for (size_t k = 0; k < r->n_text; k++)
                any |= s->hit[r->text[k]];
            ok &= any;
        }
        if (ok && r->pii) {
            int any = 0;
            for (int d = 0; d < PII_N; d++)
                if (r->pii & (1u << d)) any |= s->hit[d];
            ok &= any;
        }
        if (ok && r->has_tool) ok = call && rule_tool_ok(p, r, call, 1, NULL, 0, s->md);
        s->matched[i] = (unsigned char)ok;
    }
    int redactions = s->res.redactions;
    combine(p, s->matched, &s->res);
    s->res.redactions = redactions;
    if (s->res.action == LK_ACT_BLOCK) return stop_with(s, LK_PSTREAM_BLOCKED, NULL);
    if (s->res.action == LK_ACT_HOLD && !(s->holds_approved && !call))
        return stop_with(s, LK_PSTREAM_HOLD, NULL);
    return LK_PSTREAM_OK;
}

typedef struct {
    size_t a, b;
    int pat;
} sspan_t;

static int sspan_cmp(const void *x, const void *y)
{
    const sspan_t *s = x, *t = y;
    if (s->a != t->a) return s->a < t->a ? -1 : 1;
    return s->b > t->b ? -1 : s->b < t->b;
}

/* Scans tb; sets *out (malloc'd, may be empty) to the text that may be released, redacted.
 * final: the block ended, release everything. Returns a LK_PSTREAM_* code. */
static int release(lk_policy_stream_t *s, tbuf_t *tb, int final, char **out, size_t *olen)
{
    const lk_policy_t *p = s->p;
    *out = NULL;
    *olen = 0;
    if (!tb->buf) { /* an empty buffer still has storage: PCRE2 and memmove want a pointer */
        if (!(tb->buf = calloc(1, 1))) return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
        tb->cap = 1;
    }
    refresh_sets(s);
    size_t hold = tb->len, n = 0, cap = 0;
    sspan_t *sp = NULL;
    for (size_t pi = 0; pi < p->n_pats; pi++) {
        if (!s->scan[pi]) continue;
        size_t off = tb->ctx, a, b;
        for (;;) {
            int r = pat_next(p, (int)pi, tb->buf, tb->len, off, !final, s->md, &a, &b);
            if (r == 2 && a < hold) hold = a;
            if (r != 1) break;
            s->hit[pi] = 1;
            if (b > a && s->redact[pi]) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 8;
                    sspan_t *ns = realloc(sp, cap * sizeof *ns);
                    if (!ns) {
                        free(sp);
                        return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
                    }
                    sp = ns;
                }
                sp[n++] = (sspan_t){a, b, (int)pi};
            }
            off = b > a ? b : a + 1;
            if (off > tb->len) break;
        }
    }
    int rc = evaluate(s, NULL);
    if (rc != LK_PSTREAM_OK) {
        free(sp);
        return rc;
    }
    if (n) qsort(sp, n, sizeof *sp, sspan_cmp);
    size_t cut = final ? tb->len : hold;
    if (tb->len - cut > LK_POLICY_STREAM_WINDOW)
        cut = tb->len - LK_POLICY_STREAM_WINDOW; /* documented limit */
    if (cut < tb->ctx) cut = tb->ctx;
    for (size_t i = 0; i < n; i++)
        if (sp[i].a < cut && sp[i].b > cut) cut = sp[i].b; /* a complete match is released whole, masked */
    while (cut > tb->ctx && cut < tb->len && ((unsigned char)tb->buf[cut] & 0xC0) == 0x80)
        cut--;
    /* build the released text */
    size_t ocap = (cut - tb->ctx) + n * 48 + 1, o = 0, pos = tb->ctx;
    char *ob = malloc(ocap);
    if (!ob) {
        free(sp);
        return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
    }
    for (size_t i = 0; i < n && sp[i].a < cut; i++) {
        if (sp[i].a < pos) continue;
        char lab[96];
        rule_label(p, sp[i].pat, lab, sizeof lab);
        size_t ll = strlen(lab);
        if (o + (sp[i].a - pos) + ll + 1 > ocap) {
            ocap = o + (sp[i].a - pos) + ll + (cut - pos) + 64;
            char *nb = realloc(ob, ocap);
            if (!nb) {
                free(ob);
                free(sp);
                return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
            }
            ob = nb;
        }
        memcpy(ob + o, tb->buf + pos, sp[i].a - pos);
        o += sp[i].a - pos;
        memcpy(ob + o, lab, ll);
        o += ll;
        pos = sp[i].b;
        s->res.redactions++;
    }
    free(sp);
    if (o + (cut - pos) + 1 > ocap) {
        char *nb = realloc(ob, o + (cut - pos) + 1);
        if (!nb) {
            free(ob);
            return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
        }
        ob = nb;
    }
    if (cut > pos) {
        memcpy(ob + o, tb->buf + pos, cut - pos);
        o += cut - pos;
    }
    ob[o] = 0;
    *out = ob;
    *olen = o;
    /* keep a little released text as left context */
    size_t start = cut > CTX_KEEP ? cut - CTX_KEEP : 0;
    while (start < cut && ((unsigned char)tb->buf[start] & 0xC0) == 0x80)
        start++;
    memmove(tb->buf, tb->buf + start, tb->len - start);
    tb->len -= start;
    tb->ctx = cut - start;
    return LK_PSTREAM_OK;
}

static tbuf_t *tbuf_get(lk_policy_stream_t *s, int key, int create)
{
    for (int i = 0; i < SLOTS; i++)
        if (s->tb[i].used && s->tb[i].key == key) return &s->tb[i];
    if (!create) return NULL;
    for (int i = 0; i < SLOTS; i++)
        if (!s->tb[i].used) {
            s->tb[i].used = 1;
            s->tb[i].key = key;
            return &s->tb[i];
        }
    return NULL;
}

static void tbuf_drop(tbuf_t *tb)
{
    free(tb->buf);
    memset(tb, 0, sizeof *tb);
}

static int append(char **buf, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*len + n + 1) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, d, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int tbuf_add(lk_policy_stream_t *s, tbuf_t *tb, const char *d, size_t n)
{
    if (buffered(s) + n > POLICY_STREAM_MAX_BUFFER)
        return stop_with(s, LK_PSTREAM_ERROR, "answer too large for policy inspection");
    if (append(&tb->buf, &tb->len, &tb->cap, d, n)) return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
    s->answer_bytes += n;
    return LK_PSTREAM_OK;
}

static tcall_t *tcall_get(lk_policy_stream_t *s, int key, int create)
{
    for (int i = 0; i < SLOTS; i++)
        if (s->tc[i].used && s->tc[i].key == key) return &s->tc[i];
    if (!create) return NULL;
    for (int i = 0; i < SLOTS; i++)
        if (!s->tc[i].used) {
            s->tc[i].used = 1;
            s->tc[i].key = key;
            return &s->tc[i];
        }
    return NULL;
}

static void tcall_drop(tcall_t *c)
{
    json_decref(c->start);
    free(c->id);
    free(c->name);
    free(c->args);
    memset(c, 0, sizeof *c);
}

/* Judges a complete call: scans (and masks) its argument text, evaluates the tool rules.
 * On OK *args_out holds the (possibly redacted) arguments text. */
static int judge_call(lk_policy_stream_t *s, tcall_t *c, char **args_out, size_t *args_len)
{
    tbuf_t tmp = {0};
    *args_out = NULL;
    if (c->args_len && append(&tmp.buf, &tmp.len, &tmp.cap, c->args, c->args_len))
        return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
    int rc = release(s, &tmp, 1, args_out, args_len);
    tbuf_drop(&tmp);
    if (rc != LK_PSTREAM_OK) return rc;
    vcall_t vc = {.name = c->name ? c->name : ""};
    vc.args = c->args_len ? json_loadb(c->args, c->args_len, JSON_DECODE_ANY, NULL) : json_object();
    rc = evaluate(s, &vc);
    json_decref(vc.args);
    if (rc != LK_PSTREAM_OK) {
        free(*args_out);
        *args_out = NULL;
    }
    return rc;
}

/* ---- chat completions -------------------------------------------------------------------- */

static void chat_emit_choice(lk_policy_stream_t *s, json_t *choice)
{
    json_t *j = s->tmpl ? json_deep_copy(s->tmpl) : json_object();
    if (!j) {
        json_decref(choice);
        return;
    }
    json_object_set_new(j, "choices", json_pack("[o]", choice));
    emit_json(s, NULL, j);
    json_decref(j);
}

static int chat_flush_text(lk_policy_stream_t *s, int idx, int final)
{
    tbuf_t *tb = tbuf_get(s, idx, 0);
    if (!tb) return LK_PSTREAM_OK;
    char *out;
    size_t olen;
    int rc = release(s, tb, final, &out, &olen);
    if (rc != LK_PSTREAM_OK) return rc;
    if (olen)
        chat_emit_choice(
            s, json_pack("{s:i,s:{s:s%},s:n}", "index", idx, "delta", "content", out, olen, "finish_reason"));
    free(out);
    if (final) tbuf_drop(tb);
    return LK_PSTREAM_OK;
}

static int chat_judge(lk_policy_stream_t *s, tcall_t *c)
{
    int rc = chat_flush_text(s, c->key, 1);
    if (rc != LK_PSTREAM_OK) return rc;
    char *args;
    size_t alen;
    rc = judge_call(s, c, &args, &alen);
    if (rc == LK_PSTREAM_HOLD) { /* the call stays buffered until a human decides */
        s->held = c;
        return rc;
    }
    if (rc == LK_PSTREAM_OK) {
        json_t *fn = json_pack("{s:s,s:s%}", "name", c->name ? c->name : "", "arguments", args ? args : "",
                               args ? alen : 0);
        json_t *tcj = json_pack("{s:i,s:s,s:s,s:o}", "index", c->tindex, "id", c->id ? c->id : "", "type",
                                "function", "function", fn);
        chat_emit_choice(s, json_pack("{s:i,s:{s:[o]},s:n}", "index", c->key, "delta", "tool_calls", tcj,
                                      "finish_reason"));
    }
    free(args);
    tcall_drop(c);
    return rc;
}

static int chat_flush_all(lk_policy_stream_t *s)
{
    for (int i = 0; i < SLOTS; i++) {
        int rc = LK_PSTREAM_OK;
        if (s->tb[i].used) rc = chat_flush_text(s, s->tb[i].key, 1);
        if (rc == LK_PSTREAM_OK && s->tc[i].used) rc = chat_judge(s, &s->tc[i]);
        if (rc != LK_PSTREAM_OK) return rc;
    }
    return LK_PSTREAM_OK;
}

static int chat_tool_delta(lk_policy_stream_t *s, int idx, json_t *tcs)
{
    size_t i;
    json_t *t;
    json_array_foreach(tcs, i, t)
    {
        json_t *ti = json_object_get(t, "index");
        int tindex = json_is_integer(ti) ? (int)json_integer_value(ti) : 0;
        tcall_t *c = tcall_get(s, idx, 0);
        int rc;
        if (c && c->tindex != tindex && (rc = chat_judge(s, c)) != LK_PSTREAM_OK) return rc;
        c = tcall_get(s, idx, 0);
        if (!c) {
            if ((rc = chat_flush_text(s, idx, 1)) != LK_PSTREAM_OK) return rc;
            if (!(c = tcall_get(s, idx, 1)))
                return stop_with(s, LK_PSTREAM_ERROR, "too many parallel tool calls");
            c->tindex = tindex;
        }
        const char *id = json_string_value(json_object_get(t, "id"));
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *args = json_object_get(fn, "arguments");
        if (id && !c->id) c->id = strdup(id);
        if (name && !c->name) c->name = strdup(name);
        if (json_is_string(args)) {
            if (buffered(s) + json_string_length(args) > POLICY_STREAM_MAX_BUFFER)
                return stop_with(s, LK_PSTREAM_ERROR, "tool call too large for policy inspection");
            if (append(&c->args, &c->args_len, &c->args_cap, json_string_value(args),
                       json_string_length(args)))
                return stop_with(s, LK_PSTREAM_ERROR, "out of memory");
        }
    }
    return LK_PSTREAM_OK;
}

static int chat_feed(lk_policy_stream_t *s, const char *data, size_t len)
{
    json_t *root = json_loadb(data, len, 0, NULL);
    json_t *choices = json_object_get(root, "choices");
    if (!json_is_object(root) || json_object_get(root, "error") || !json_is_array(choices) ||
        json_array_size(choices) == 0) {
        int rc = LK_PSTREAM_OK;
        if (!root && len == 6 && memcmp(data, "[DONE]", 6) == 0) rc = chat_flush_all(s);
        json_decref(root);
        if (rc == LK_PSTREAM_OK) s->emit(s->ud, NULL, 0, data, len);
        return rc;
    }
    const char *model = json_string_value(json_object_get(root, "model"));
    if (model && !s->model) s->model = strdup(model);
    json_decref(s->tmpl);
    s->tmpl = json_deep_copy(root);
    json_object_del(s->tmpl, "choices");
    json_object_del(s->tmpl, "usage");

    int rc = LK_PSTREAM_OK, finishing = 0;
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        json_t *fin = json_object_get(c, "finish_reason");
        if (fin && !json_is_null(fin)) finishing = 1;
    }
    /* the stripped chunk (role, finish_reason, logprobs...): first, or after the flush when finishing */
    json_t *stripped = json_deep_copy(root);
    json_t *keep = json_array();
    json_array_foreach(json_object_get(stripped, "choices"), i, c)
    {
        json_t *d = json_object_get(c, "delta");
        if (json_is_object(d)) {
            json_object_del(d, "content");
            json_object_del(d, "tool_calls");
        }
        json_t *fin = json_object_get(c, "finish_reason"), *lp = json_object_get(c, "logprobs");
        if ((json_is_object(d) && json_object_size(d)) || (fin && !json_is_null(fin)) ||
            (lp && !json_is_null(lp)))
            json_array_append(keep, c);
    }
    json_t *usage = json_object_get(stripped, "usage");
    int emit_stripped = json_array_size(keep) || (usage && !json_is_null(usage));
    json_object_set_new(stripped, "choices", keep);
    if (emit_stripped && !finishing) emit_json(s, NULL, stripped);

    json_array_foreach(choices, i, c)
    {
        json_t *ix = json_object_get(c, "index");
        int idx = json_is_integer(ix) ? (int)json_integer_value(ix) : 0;
        json_t *d = json_object_get(c, "delta");
        json_t *content = json_object_get(d, "content");
        if (json_is_string(content) && json_string_length(content)) {
            tbuf_t *tb = tbuf_get(s, idx, 1);
            if (!tb) {
                rc = stop_with(s, LK_PSTREAM_ERROR, "too many choices");
                break;
            }
            if ((rc = tbuf_add(s, tb, json_string_value(content), json_string_length(content))) !=
                LK_PSTREAM_OK)
                break;
            if ((rc = chat_flush_text(s, idx, 0)) != LK_PSTREAM_OK) break;
        }
        json_t *tcs = json_object_get(d, "tool_calls");
        if (json_is_array(tcs) && (rc = chat_tool_delta(s, idx, tcs)) != LK_PSTREAM_OK) break;
        json_t *fin = json_object_get(c, "finish_reason");
        if (fin && !json_is_null(fin)) {
            if ((rc = chat_flush_text(s, idx, 1)) != LK_PSTREAM_OK) break;
            tcall_t *tc = tcall_get(s, idx, 0);
            if (tc && (rc = chat_judge(s, tc)) != LK_PSTREAM_OK) break;
        }
    }
    if (rc == LK_PSTREAM_OK && emit_stripped && finishing) emit_json(s, NULL, stripped);
    json_decref(stripped);
    json_decref(root);
    return rc;
}

/* ---- Anthropic messages ------------------------------------------------------------------ */

static int msg_flush_text(lk_policy_stream_t *s, tbuf_t *tb, int final)
{
    char *out;
    size_t olen;
    int key = tb->key;
    int rc = release(s, tb, final, &out, &olen);
    if (rc != LK_PSTREAM_OK) return rc;
    if (olen) {
        json_t *j = json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", key, "delta",
                              "type", "text_delta", "text", out, olen);
        if (j) emit_json(s, "content_block_delta", j);
        json_decref(j);
    }
    free(out);
    if (final) tbuf_drop(tb);
    return LK_PSTREAM_OK;
}

static int msg_judge(lk_policy_stream_t *s, tcall_t *c)
{
    char *args;
    size_t alen;
    int rc = judge_call(s, c, &args, &alen);
    if (rc == LK_PSTREAM_HOLD) {
        s->held = c;
        return rc;
    }
    if (rc == LK_PSTREAM_OK) {
        if (c->start) emit_json(s, "content_block_start", c->start);
        if (args && alen) {
            json_t *j = json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", c->key,
                                  "delta", "type", "input_json_delta", "partial_json", args, alen);
            if (j) emit_json(s, "content_block_delta", j);
            json_decref(j);
        }
    }
    free(args);
    tcall_drop(c);
    return rc;
}

static int msg_flush_all(lk_policy_stream_t *s)
{
    for (int i = 0; i < SLOTS; i++) {
        int rc = LK_PSTREAM_OK;
        if (s->tb[i].used) rc = msg_flush_text(s, &s->tb[i], 1);
        if (rc == LK_PSTREAM_OK && s->tc[i].used) rc = msg_judge(s, &s->tc[i]);
        if (rc != LK_PSTREAM_OK) return rc;
    }
    return LK_PSTREAM_OK;
}

static int msg_feed(lk_policy_stream_t *s, const char *event, size_t event_len, const char *data, size_t len)
{
    json_t *root = json_loadb(data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(root, "type"));
    char ev[64] = "";
    if (event_len && event_len < sizeof ev) memcpy(ev, event, event_len), ev[event_len] = 0;
    const char *name = ev[0] ? ev : type;
    json_t *ix = json_object_get(root, "index");
    int idx = json_is_integer(ix) ? (int)json_integer_value(ix) : 0;
    int rc = LK_PSTREAM_OK, pass = 1;
    if (!root || !name) {
        /* not JSON: pass through */
    } else if (!strcmp(name, "message_start")) {
        const char *m = json_string_value(json_object_get(json_object_get(root, "message"), "model"));
        if (m && !s->model) s->model = strdup(m);
    } else if (!strcmp(name, "content_block_start")) {
        json_t *cb = json_object_get(root, "content_block");
        const char *bt = json_string_value(json_object_get(cb, "type"));
        if (bt && !strcmp(bt, "tool_use")) {
            tcall_t *c = tcall_get(s, idx, 0);
            if (c) tcall_drop(c); /* a second start for the same index replaces the first (never emitted) */
            c = tcall_get(s, idx, 1);
            if (!c) {
                rc = stop_with(s, LK_PSTREAM_ERROR, "too many tool calls");
            } else {
                const char *nm = json_string_value(json_object_get(cb, "name"));
                c->name = strdup(nm ? nm : "");
                c->start = json_incref(root);
                json_t *in = json_object_get(cb, "input");
                if (json_is_object(in) && json_object_size(in)) { /* input given whole: judge it too */
                    char *d = json_dumps(in, JSON_COMPACT);
                    if (d) {
                        json_object_set_new(cb, "input", json_object());
                        if (append(&c->args, &c->args_len, &c->args_cap, d, strlen(d)))
                            rc = stop_with(s, LK_PSTREAM_ERROR, "out of memory");
                        jansson_free(d);
                    }
                }
            }
            pass = 0;
        } else if (bt && !strcmp(bt, "text")) {
            tbuf_t *tb = tbuf_get(s, idx, 1);
            json_t *t = json_object_get(cb, "text");
            if (!tb) {
                rc = stop_with(s, LK_PSTREAM_ERROR, "too many content blocks");
            } else if (json_is_string(t) && json_string_length(t)) {
                if ((rc = tbuf_add(s, tb, json_string_value(t), json_string_length(t))) == LK_PSTREAM_OK)
                    json_object_set_new(cb, "text", json_string(""));
                if (rc == LK_PSTREAM_OK) {
                    emit_json(s, ev[0] ? ev : NULL, root);
                    pass = 0;
                    rc = msg_flush_text(s, tb, 0);
                }
            }
        }
    } else if (!strcmp(name, "content_block_delta")) {
        json_t *d = json_object_get(root, "delta");
        const char *dt = json_string_value(json_object_get(d, "type"));
        if (dt && !strcmp(dt, "text_delta")) {
            json_t *t = json_object_get(d, "text");
            tbuf_t *tb = tbuf_get(s, idx, 1);
            pass = 0;
            if (!tb)
                rc = stop_with(s, LK_PSTREAM_ERROR, "too many content blocks");
            else if (json_is_string(t) &&
                     (rc = tbuf_add(s, tb, json_string_value(t), json_string_length(t))) == LK_PSTREAM_OK)
                rc = msg_flush_text(s, tb, 0);
        } else if (dt && !strcmp(dt, "input_json_delta")) {
            tcall_t *c = tcall_get(s, idx, 0);
            json_t *pj = json_object_get(d, "partial_json");
            if (c) {
                pass = 0;
                if (json_is_string(pj)) {
                    if (buffered(s) + json_string_length(pj) > POLICY_STREAM_MAX_BUFFER)
                        rc = stop_with(s, LK_PSTREAM_ERROR, "tool call too large for policy inspection");
                    else if (append(&c->args, &c->args_len, &c->args_cap, json_string_value(pj),
                                    json_string_length(pj)))
                        rc = stop_with(s, LK_PSTREAM_ERROR, "out of memory");
                }
            }
        }
    } else if (!strcmp(name, "content_block_stop")) {
        tbuf_t *tb = tbuf_get(s, idx, 0);
        tcall_t *c = tcall_get(s, idx, 0);
        if (tb) rc = msg_flush_text(s, tb, 1);
        if (rc == LK_PSTREAM_OK && c) rc = msg_judge(s, c);
    } else if (!strcmp(name, "message_delta") || !strcmp(name, "message_stop")) {
        rc = msg_flush_all(s);
    }
    if (rc == LK_PSTREAM_OK && pass) s->emit(s->ud, event, event_len, data, len);
    json_decref(root);
    return rc;
}

/* ---- API --------------------------------------------------------------------------------- */

lk_policy_stream_t *lk_policy_stream_new(const lk_policy_t *p, const lk_policy_ctx_t *ctx,
                                         lk_policy_emit_fn emit, void *ud)
{
    if (!p || !ctx || !emit) return NULL;
    lk_policy_stream_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = p;
    s->ctx = *ctx;
    s->emit = emit;
    s->ud = ud;
    s->res.est_microusd = -1;
    s->hit = calloc(p->n_pats + 1, 1);
    s->scan = calloc(p->n_pats + 1, 1);
    s->redact = calloc(p->n_pats + 1, 1);
    s->matched = calloc(p->n_rules + 1, 1);
    s->stat = calloc(p->n_rules + 1, 1);
    s->md = pcre2_match_data_create(16, NULL);
    if (!s->hit || !s->scan || !s->redact || !s->matched || !s->stat || !s->md) lk_policy_stream_free(&s);
    return s;
}

int lk_policy_stream_feed(lk_policy_stream_t *s, const char *event, size_t event_len, const char *data,
                          size_t data_len)
{
    if (!s) return LK_PSTREAM_ERROR;
    if (s->state != LK_PSTREAM_OK) return s->state;
    if (!data) data = "", data_len = 0;
    if (!event) event_len = 0;
    /* rules without text/tool conditions (e.g. only a model) are decided at the first event */
    if (s->ctx.api == LK_API_MESSAGES) {
        int rc = msg_feed(s, event, event_len, data, data_len);
        if (rc == LK_PSTREAM_OK) {
            refresh_sets(s);
            rc = evaluate(s, NULL);
        }
        return rc;
    }
    if (s->ctx.api == LK_API_CHAT) {
        int rc = chat_feed(s, data, data_len);
        if (rc == LK_PSTREAM_OK) {
            refresh_sets(s);
            rc = evaluate(s, NULL);
        }
        return rc;
    }
    /* TODO(policy): LK_API_RESPONSES streams pass through unchanged (docs/policy.md). */
    s->emit(s->ud, event, event_len, data, data_len);
    return LK_PSTREAM_OK;
}

int lk_policy_stream_finish(lk_policy_stream_t *s)
{
    if (!s) return LK_PSTREAM_ERROR;
    if (s->state != LK_PSTREAM_OK) return s->state;
    if (s->ctx.api == LK_API_MESSAGES) return msg_flush_all(s);
    if (s->ctx.api == LK_API_CHAT) return chat_flush_all(s);
    return LK_PSTREAM_OK;
}

const lk_policy_result_t *lk_policy_stream_result(const lk_policy_stream_t *s)
{
    return s ? &s->res : NULL;
}

void lk_policy_stream_free(lk_policy_stream_t **sp)
{
    if (!sp || !*sp) return;
    lk_policy_stream_t *s = *sp;
    for (int i = 0; i < SLOTS; i++) {
        tbuf_drop(&s->tb[i]);
        tcall_drop(&s->tc[i]);
    }
    json_decref(s->tmpl);
    free(s->model);
    free(s->hit);
    free(s->scan);
    free(s->redact);
    free(s->matched);
    free(s->stat);
    pcre2_match_data_free(s->md);
    free(s->res.body);
    free(s);
    *sp = NULL;
}

const char *lk_policy_stream_held_call(const lk_policy_stream_t *s, const char **args, size_t *args_len)
{
    if (!s || s->state != LK_PSTREAM_HOLD || !s->held) {
        if (args) *args = NULL;
        if (args_len) *args_len = 0;
        return NULL;
    }
    if (args) *args = s->held->args;
    if (args_len) *args_len = s->held->args_len;
    return s->held->name ? s->held->name : "";
}

int lk_policy_stream_resume(lk_policy_stream_t *s, int approved, const char *reason)
{
    if (!s || s->state != LK_PSTREAM_HOLD) return s ? s->state : LK_PSTREAM_ERROR;
    if (!approved) {
        char m[320];
        snprintf(m, sizeof m, "A reviewer rejected the model's %s%s%s", s->held ? "tool call" : "answer",
                 reason && reason[0] ? ": " : ".", reason ? reason : "");
        return stop_with(s, LK_PSTREAM_BLOCKED, m);
    }
    /* approved: the hold rules that matched need a new match to hold again (tool rules: another call) */
    for (size_t i = 0; i < s->p->n_rules; i++)
        if (s->p->rules[i].action == LK_ACT_HOLD && s->p->rules[i].has_tool) s->matched[i] = 0;
    if (!s->held) s->holds_approved = 1;
    s->state = LK_PSTREAM_OK;
    s->res.action = LK_ACT_ALLOW;
    tcall_t *c = s->held;
    s->held = NULL;
    if (!c) return LK_PSTREAM_OK;
    /* emit the call as judged-allowed */
    if (s->ctx.api == LK_API_MESSAGES) {
        if (c->start) emit_json(s, "content_block_start", c->start);
        if (c->args_len) {
            json_t *j = json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", c->key,
                                  "delta", "type", "input_json_delta", "partial_json", c->args, c->args_len);
            if (j) emit_json(s, "content_block_delta", j);
            json_decref(j);
        }
    } else {
        json_t *fn = json_pack("{s:s,s:s%}", "name", c->name ? c->name : "", "arguments",
                               c->args ? c->args : "", c->args ? c->args_len : 0);
        json_t *tcj = json_pack("{s:i,s:s,s:s,s:o}", "index", c->tindex, "id", c->id ? c->id : "", "type",
                                "function", "function", fn);
        chat_emit_choice(s, json_pack("{s:i,s:{s:[o]},s:n}", "index", c->key, "delta", "tool_calls", tcj,
                                      "finish_reason"));
    }
    tcall_drop(c);
    return LK_PSTREAM_OK;
}
