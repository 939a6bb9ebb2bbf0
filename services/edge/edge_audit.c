/*  edge_audit - closing events sent until acknowledged, fail-open tenants,
 *  audit query strings, audit metrics. */
#include "edge_audit.h"

#include "lk_audit_cols.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_http.h"
#include "lk_log.h"
#include "lk_util.h"

#define RETRY_MS      250
#define MAX_FAIL_OPEN 256
#define LINGER_MS     2  /* a deferred closing event waits at most this long for an accept to go with */
#define LINGER_MAX    64 /* ... or for this many others */

typedef struct pending {
    struct pending *next;
    lk_buf_t enc; /* the encoded AUDIT message */
    char rid[LK_PROTO_MAX_RID + 1];
} pending_t;

static struct {
    int init;
    size_t cap_bytes, bytes, count;
    pending_t *waiting; /* to re-send at the next timer */
    h2o_timeout_t retry;
    h2o_timeout_entry_t timer;
    pending_t *deferred, **deferred_tail; /* closing events not sent yet, in order */
    size_t ndeferred;
    h2o_timeout_t linger;
    h2o_timeout_entry_t linger_timer;
    uint64_t sent, retries, dropped, fail_open;
    struct {
        char tenant[64];
        int fail_open;
    } tenants[MAX_FAIL_OPEN];
    size_t ntenants;
} S;

static void send_one(pending_t *p, const lk_msg_t *m);

static void on_timer(h2o_timeout_entry_t *entry)
{
    (void)entry;
    pending_t *list = S.waiting;
    S.waiting = NULL;
    while (list) {
        pending_t *p = list;
        list = p->next;
        p->next = NULL;
        S.retries++;
        send_one(p, NULL);
    }
}

static void on_linger(h2o_timeout_entry_t *entry)
{
    (void)entry;
    edge_audit_flush();
}

static void init(void)
{
    if (S.init) return;
    S.init = 1;
    const char *cap = getenv("LUMKEY_EDGE_AUDIT_QUEUE_BYTES");
    S.cap_bytes = cap && atoll(cap) > 0 ? (size_t)atoll(cap) : (size_t)64 << 20;
    h2o_timeout_init(g_edge->loop, &S.retry, RETRY_MS);
    S.timer.cb = on_timer;
    h2o_timeout_init(g_edge->loop, &S.linger, LINGER_MS);
    S.linger_timer.cb = on_linger;
    S.deferred_tail = &S.deferred;
}

static void wait_retry(pending_t *p)
{
    p->next = S.waiting;
    S.waiting = p;
    if (!h2o_timeout_is_linked(&S.timer)) h2o_timeout_link(g_edge->loop, &S.retry, &S.timer);
}

static void release(pending_t *p)
{
    S.bytes -= p->enc.len;
    S.count--;
    lk_buf_free(&p->enc);
    free(p);
}

static void on_reply(void *data, const lk_msg_t *reply)
{
    pending_t *p = data;
    if (reply && reply->env.type == LK_MSG_AUDIT_REP) {
        S.sent++;
        release(p);
        return;
    }
    if (reply && reply->env.type == LK_MSG_ERROR && reply->u.error.status == LK_ST_BAD_REQUEST) {
        /* audit will never take it: retrying cannot help */
        lk_log(LK_LOG_ERROR, p->rid, "audit refused a closing event as invalid: not recorded");
        S.dropped++;
        release(p);
        return;
    }
    wait_retry(p);
}

/* Sends p: from `from` while the caller's message is alive (the first send), else
 * from the kept encoding (resends). */
static void send_one(pending_t *p, const lk_msg_t *from)
{
    lk_msg_t m;
    if (from) {
        m = *from;
    } else if (lk_proto_decode(p->enc.data, p->enc.len, &m) != 0) { /* cannot happen: we encoded it */
        S.dropped++;
        release(p);
        return;
    }
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    if (!edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_reply, p)) wait_retry(p);
}

/* A private copy of m, counted against the queue's bound; NULL (logged, counted) if it
 * cannot be kept. */
static pending_t *keep(const lk_msg_t *m)
{
    init();
    pending_t *p = calloc(1, sizeof *p);
    if (!p) goto drop;
    lk_buf_init(&p->enc, 0);
    if (lk_proto_encode(m, &p->enc) != 0) {
        lk_buf_free(&p->enc);
        free(p);
        goto drop;
    }
    if (S.bytes + p->enc.len > S.cap_bytes) {
        lk_buf_free(&p->enc);
        free(p);
        goto drop;
    }
    lk_str_copy(p->rid, sizeof p->rid, m->env.rid);
    S.bytes += p->enc.len;
    S.count++;
    return p;
drop:
    S.dropped++;
    {
        char rid[LK_PROTO_MAX_RID + 1];
        lk_log(LK_LOG_ERROR, lk_str_copy(rid, sizeof rid, m->env.rid),
               "audit retry queue full (LUMKEY_EDGE_AUDIT_QUEUE_BYTES): %.*s event dropped",
               (int)m->u.audit.kind.len, m->u.audit.kind.ptr);
    }
    return NULL;
}

void edge_audit_send_reliable(const lk_msg_t *m)
{
    pending_t *p = keep(m);
    if (p) send_one(p, m);
}

void edge_audit_send_closing(const lk_msg_t *m)
{
    pending_t *p = keep(m);
    if (!p) return;
    *S.deferred_tail = p;
    S.deferred_tail = &p->next;
    if (++S.ndeferred >= LINGER_MAX)
        edge_audit_flush();
    else if (!h2o_timeout_is_linked(&S.linger_timer))
        h2o_timeout_link(g_edge->loop, &S.linger, &S.linger_timer);
}

void edge_audit_flush(void)
{
    if (!S.init || !S.deferred) return;
    if (h2o_timeout_is_linked(&S.linger_timer)) h2o_timeout_unlink(&S.linger_timer);
    pending_t *list = S.deferred;
    S.deferred = NULL;
    S.deferred_tail = &S.deferred;
    S.ndeferred = 0;
    while (list) {
        pending_t *p = list;
        list = p->next;
        p->next = NULL;
        send_one(p, NULL);
    }
}

size_t edge_audit_pending(void)
{
    return S.count;
}

void edge_audit_learn(const char *tenant, int fail_open)
{
    if (!tenant || !*tenant || strlen(tenant) >= sizeof S.tenants[0].tenant) return;
    for (size_t i = 0; i < S.ntenants; i++)
        if (strcmp(S.tenants[i].tenant, tenant) == 0) {
            S.tenants[i].fail_open = fail_open;
            return;
        }
    if (!fail_open || S.ntenants == MAX_FAIL_OPEN) return; /* unknown = fail closed */
    snprintf(S.tenants[S.ntenants].tenant, sizeof S.tenants[0].tenant, "%s", tenant);
    S.tenants[S.ntenants++].fail_open = 1;
}

int edge_audit_is_fail_open(const char *tenant)
{
    if (!tenant) return 0;
    for (size_t i = 0; i < S.ntenants; i++)
        if (strcmp(S.tenants[i].tenant, tenant) == 0) return S.tenants[i].fail_open;
    return 0;
}

void edge_audit_count_fail_open(const char *rid, const char *tenant)
{
    S.fail_open++;
    lk_log(LK_LOG_ERROR, rid,
           "AUDIT FAIL-OPEN: audit could not record the request of tenant %s; forwarded anyway because the "
           "tenant "
           "chose fail-open",
           tenant ? tenant : "?");
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* URL-decodes s[0..n) into out (NUL-terminated, cap bytes). */
static void url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n + 0 && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
}

lk_str_t edge_audit_query_json(h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX || req->query_at + 1 >= req->path.len) return (lk_str_t){NULL, 0};
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    json_t *obj = json_object();
    while (obj && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        char name[64], value[512];
        url_decode(q, (size_t)((eq ? eq : stop) - q), name, sizeof name);
        url_decode(eq ? eq + 1 : stop, eq ? (size_t)(stop - eq - 1) : 0, value, sizeof value);
        if (name[0] && json_object_get(obj, name) == NULL) json_object_set_new(obj, name, json_string(value));
        q = stop + 1;
    }
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) return (lk_str_t){NULL, 0};
    h2o_iovec_t v = h2o_strdup(&req->pool, s, strlen(s));
    free(s);
    return (lk_str_t){v.base, v.len};
}

/* -------------------------------------------------------------- export -- */

#define EXPORT_PAGE "1000"

typedef struct {
    h2o_generator_t gen; /* first */
    h2o_req_t *req;
    char rid[LK_RID_LEN + 1];
    char tenant[128], actor[64], role[32];
    json_t *filters; /* from the query string, plus cursor and limit */
    int csv, has_more, failed;
    edge_call_t *call;
    lk_buf_t out;
    uint64_t total;
} export_t;

static int csv_cell(lk_buf_t *b, json_t *v)
{
    char num[32];
    const char *s = NULL;
    if (!v || json_is_null(v)) return 0;
    if (json_is_object(v) || json_is_array(v)) { /* anomaly, hdp: the JSON text in one cell */
        char *d = json_dumps(v, JSON_COMPACT);
        json_t *t = d ? json_string(d) : NULL;
        free(d);
        int rc = t ? csv_cell(b, t) : -1;
        json_decref(t);
        return rc;
    }
    if (json_is_string(v))
        s = json_string_value(v);
    else if (json_is_integer(v))
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v)), s = num;
    else if (json_is_boolean(v))
        s = json_is_true(v) ? "true" : "false";
    if (!s) return 0;
    int quote = strpbrk(s, ",\"\r\n") != NULL || (s[0] && strchr("=+-@", s[0]) != NULL);
    if (!quote) return lk_buf_append(b, s, strlen(s));
    int rc = lk_buf_append(b, "\"", 1);
    if (s[0] && strchr("=+-@", s[0]) && !(s[0] == '-' && s[1] >= '0' && s[1] <= '9'))
        rc |= lk_buf_append(b, "'", 1); /* defused for spreadsheets */
    for (const char *p = s; *p; p++)
        rc |= lk_buf_append(b, p, 1) | (*p == '"' ? lk_buf_append(b, "\"", 1) : 0);
    return rc | lk_buf_append(b, "\"", 1);
}

static void export_fetch(export_t *x);

static void export_send(export_t *x, int final)
{
    h2o_iovec_t iov = h2o_iovec_init(x->out.data, x->out.len);
    h2o_send(x->req, &iov, iov.len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_export_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    export_t *x = (export_t *)gen;
    x->out.len = 0;
    if (x->has_more) export_fetch(x);
}

static void on_export_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    export_t *x = (export_t *)gen;
    edge_rpc_cancel(g_edge->rpc, x->call);
    x->call = NULL;
}

static void on_export_dispose(void *p)
{
    export_t *x = p;
    edge_rpc_cancel(g_edge->rpc, x->call);
    json_decref(x->filters);
    lk_buf_free(&x->out);
}

static void on_export_page(void *data, const lk_msg_t *reply)
{
    export_t *x = data;
    x->call = NULL;
    json_t *page = NULL;
    if (reply && reply->env.type == LK_MSG_ADMIN_REP && reply->u.admin_rep.status == LK_ST_OK)
        page = json_loadb(reply->u.admin_rep.json.ptr, reply->u.admin_rep.json.len, 0, NULL);
    json_t *events = json_object_get(page, "events");
    int first = x->req->res.status == 0;
    if (!json_is_array(events)) {
        json_decref(page);
        lk_log(LK_LOG_ERROR, x->rid, "audit export: a page could not be read");
        if (first) {
            edge_http_send_error(x->req, 503, x->rid, NULL, "audit_unavailable",
                                 "The audit service could not answer; please retry.");
        } else {
            h2o_send(x->req, NULL, 0, H2O_SEND_STATE_ERROR); /* cut: the client sees an incomplete body */
        }
        return;
    }
    if (first) {
        h2o_req_t *req = x->req;
        req->res.status = 200;
        req->res.reason = "OK";
        if (x->csv)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                           H2O_STRLIT("text/csv; charset=utf-8"));
        else
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                           H2O_STRLIT("application/x-ndjson"));
        edge_http_add_common_headers(req, 200, x->rid);
        x->gen.proceed = on_export_proceed;
        x->gen.stop = on_export_stop;
        h2o_start_response(req, &x->gen);
    }
    x->out.len = 0;
    int rc = 0;
    if (first && x->csv) {
        for (int k = 0; LK_AUDIT_EXPORT_COLS[k]; k++)
            rc |= lk_buf_append(&x->out, k ? "," : "", k ? 1 : 0) |
                  lk_buf_append(&x->out, LK_AUDIT_EXPORT_COLS[k], strlen(LK_AUDIT_EXPORT_COLS[k]));
        rc |= lk_buf_append(&x->out, "\r\n", 2);
    }
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        if (x->csv) {
            for (int k = 0; LK_AUDIT_EXPORT_COLS[k]; k++)
                rc |= (k ? lk_buf_append(&x->out, ",", 1) : 0) |
                      csv_cell(&x->out, json_object_get(e, LK_AUDIT_EXPORT_COLS[k]));
            rc |= lk_buf_append(&x->out, "\r\n", 2);
        } else {
            char *s = json_dumps(e, JSON_COMPACT);
            rc |= !s || lk_buf_append(&x->out, s, strlen(s)) != 0 || lk_buf_append(&x->out, "\n", 1) != 0;
            free(s);
        }
    }
    x->total += json_array_size(events);
    x->has_more = json_is_true(json_object_get(page, "has_more"));
    json_t *cur = json_object_get(page, "next_cursor");
    if (json_is_string(cur)) json_object_set(x->filters, "cursor", cur);
    json_decref(page);
    if (rc) {
        h2o_send(x->req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    export_send(x, !x->has_more);
}

static void export_fetch(export_t *x)
{
    char *body = json_dumps(x->filters, JSON_COMPACT);
    lk_msg_t m = {0};
    m.env.type = LK_MSG_ADMIN_REQ;
    m.env.rid = lk_str(x->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms * 10;
    m.u.admin_req.op = LK_STR_LIT("audit.query");
    m.u.admin_req.tenant = lk_str(x->tenant);
    m.u.admin_req.actor = lk_str(x->actor);
    m.u.admin_req.role = lk_str(x->role);
    m.u.admin_req.json = lk_str(body);
    x->call = body ? edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_export_page, x) : NULL;
    free(body);
    if (!x->call) on_export_page(x, NULL);
}

void edge_audit_export_start(h2o_req_t *req, const char *rid, lk_str_t tenant, lk_str_t actor, lk_str_t role)
{
    export_t *x = h2o_mem_alloc_shared(&req->pool, sizeof *x, on_export_dispose);
    memset(x, 0, sizeof *x);
    x->req = req;
    lk_buf_init(&x->out, 0);
    snprintf(x->rid, sizeof x->rid, "%s", rid);
    lk_str_copy(x->tenant, sizeof x->tenant, tenant);
    lk_str_copy(x->actor, sizeof x->actor, actor);
    lk_str_copy(x->role, sizeof x->role, role);
    lk_str_t q = edge_audit_query_json(req);
    x->filters = q.len ? json_loadb(q.ptr, q.len, 0, NULL) : json_object();
    const char *fmt = json_string_value(json_object_get(x->filters, "format"));
    if (!x->filters || !json_object_get(x->filters, "from") || !json_object_get(x->filters, "to") ||
        (fmt && strcmp(fmt, "jsonl") != 0 && strcmp(fmt, "csv") != 0)) {
        edge_http_send_error(req, 400, rid, NULL, "invalid_request",
                             "export needs from and to; format is jsonl (default) or csv.");
        return;
    }
    x->csv = fmt && strcmp(fmt, "csv") == 0;
    json_object_del(x->filters, "format");
    json_object_del(x->filters, "cursor");
    json_object_del(x->filters, "last");
    json_object_set_new(x->filters, "limit", json_string(EXPORT_PAGE));
    export_fetch(x);
}

/* The outbox backlog as audit reports it (audit.status), refreshed on scrape at most every 2 s. */
static struct {
    int64_t asked_ms;
    int known;
    long long backlog, oldest_s;
} B;

static void on_status(void *data, const lk_msg_t *reply)
{
    (void)data;
    if (!reply || reply->env.type != LK_MSG_ADMIN_REP || reply->u.admin_rep.status != LK_ST_OK) return;
    json_t *doc = json_loadb(reply->u.admin_rep.json.ptr, reply->u.admin_rep.json.len, 0, NULL);
    json_t *b = json_object_get(doc, "outbox_backlog"), *o = json_object_get(doc, "outbox_oldest_seconds");
    if (json_is_integer(b) && json_integer_value(b) >= 0) {
        B.known = 1;
        B.backlog = json_integer_value(b);
        B.oldest_s = json_is_integer(o) ? json_integer_value(o) : 0;
    }
    json_decref(doc);
}

static void refresh_status(void)
{
    int64_t now = lk_now_ms();
    if (now - B.asked_ms < 2000) return;
    B.asked_ms = now;
    lk_msg_t m = {0};
    m.env.type = LK_MSG_ADMIN_REQ;
    char rid[LK_RID_LEN + 1];
    lk_rid_new(rid);
    m.env.rid = lk_str(rid);
    m.env.deadline_ms = now + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.admin_req.op = LK_STR_LIT("audit.status");
    m.u.admin_req.role = LK_STR_LIT("auditor");
    (void)edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_status, NULL);
}

static uint64_t s_off_requests; /* requests that skipped the audit (LUMKEY_AUDIT_MODE=off) */

int edge_audit_off(void)
{
    return g_edge->cfg.audit_off;
}

void edge_audit_count_off(void)
{
    s_off_requests++;
}

static int render_audit_mode(lk_buf_t *out)
{
    char text[640];
    int n = snprintf(text, sizeof text,
                     "# HELP lumkey_edge_audit_mode The audit mode: on (durable, the default) or off "
                     "(LUMKEY_AUDIT_MODE=off, benchmark only: requests are not audited).\n"
                     "# TYPE lumkey_edge_audit_mode gauge\nlumkey_edge_audit_mode{mode=\"%s\"} 1\n"
                     "# HELP lumkey_edge_audit_off_requests_total Requests forwarded without any audit event "
                     "because the audit is off.\n# TYPE lumkey_edge_audit_off_requests_total counter\n"
                     "lumkey_edge_audit_off_requests_total %llu\n",
                     g_edge->cfg.audit_off ? "off" : "on", (unsigned long long)s_off_requests);
    return n > 0 && (size_t)n < sizeof text ? lk_buf_append(out, text, (size_t)n) : -1;
}

int edge_audit_metrics_render(lk_buf_t *out)
{
    refresh_status();
    if (render_audit_mode(out) != 0) return -1;
    char text[1600];
    int n = snprintf(
        text, sizeof text,
        "# HELP lumkey_edge_audit_fail_open_total Requests of fail-open tenants forwarded although audit "
        "could not "
        "record them.\n# TYPE lumkey_edge_audit_fail_open_total counter\nlumkey_edge_audit_fail_open_total "
        "%llu\n"
        "# HELP lumkey_edge_audit_closing_sent_total Closing audit events acknowledged by audit.\n"
        "# TYPE lumkey_edge_audit_closing_sent_total counter\nlumkey_edge_audit_closing_sent_total %llu\n"
        "# HELP lumkey_edge_audit_closing_retries_total Closing audit events sent again after a failure.\n"
        "# TYPE lumkey_edge_audit_closing_retries_total counter\nlumkey_edge_audit_closing_retries_total "
        "%llu\n"
        "# HELP lumkey_edge_audit_dropped_total Closing audit events given up (queue full or refused).\n"
        "# TYPE lumkey_edge_audit_dropped_total counter\nlumkey_edge_audit_dropped_total %llu\n"
        "# HELP lumkey_edge_audit_pending Closing audit events not yet acknowledged.\n"
        "# TYPE lumkey_edge_audit_pending gauge\nlumkey_edge_audit_pending %zu\n"
        "# HELP lumkey_edge_audit_pending_bytes Memory held by unacknowledged closing audit events.\n"
        "# TYPE lumkey_edge_audit_pending_bytes gauge\nlumkey_edge_audit_pending_bytes %zu\n",
        (unsigned long long)S.fail_open, (unsigned long long)S.sent, (unsigned long long)S.retries,
        (unsigned long long)S.dropped, S.count, S.bytes);
    if (n <= 0 || (size_t)n >= sizeof text || lk_buf_append(out, text, (size_t)n) != 0) return -1;
    if (!B.known) return 0;
    n = snprintf(
        text, sizeof text,
        "# HELP lumkey_edge_audit_outbox_backlog Audit events not yet delivered to Kafka (as audit last "
        "reported).\n# TYPE lumkey_edge_audit_outbox_backlog gauge\nlumkey_edge_audit_outbox_backlog %lld\n"
        "# HELP lumkey_edge_audit_outbox_oldest_seconds Age of the oldest undelivered audit event.\n"
        "# TYPE lumkey_edge_audit_outbox_oldest_seconds gauge\nlumkey_edge_audit_outbox_oldest_seconds "
        "%lld\n",
        B.backlog, B.oldest_s);
    return n > 0 && (size_t)n < sizeof text ? lk_buf_append(out, text, (size_t)n) : -1;
}
