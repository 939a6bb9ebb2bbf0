/*  edge_audit - closing events sent until acknowledged, fail-open tenants,
 *  audit query strings, audit metrics. */
#include "edge_audit.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_log.h"
#include "lk_util.h"

#define RETRY_MS      250
#define MAX_FAIL_OPEN 256

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
    uint64_t sent, retries, dropped, fail_open;
    struct {
        char tenant[64];
        int fail_open;
    } tenants[MAX_FAIL_OPEN];
    size_t ntenants;
} S;

static void send_one(pending_t *p);

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
        send_one(p);
    }
}

static void init(void)
{
    if (S.init) return;
    S.init = 1;
    const char *cap = getenv("LUMKEY_EDGE_AUDIT_QUEUE_BYTES");
    S.cap_bytes = cap && atoll(cap) > 0 ? (size_t)atoll(cap) : (size_t)64 << 20;
    h2o_timeout_init(g_edge->loop, &S.retry, RETRY_MS);
    S.timer.cb = on_timer;
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

static void send_one(pending_t *p)
{
    lk_msg_t m;
    if (lk_proto_decode(p->enc.data, p->enc.len, &m) != 0) { /* cannot happen: we encoded it */
        S.dropped++;
        release(p);
        return;
    }
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    if (!edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_reply, p)) wait_retry(p);
}

void edge_audit_send_reliable(const lk_msg_t *m)
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
    send_one(p);
    return;
drop:
    S.dropped++;
    {
        char rid[LK_PROTO_MAX_RID + 1];
        lk_log(LK_LOG_ERROR, lk_str_copy(rid, sizeof rid, m->env.rid),
               "audit retry queue full (LUMKEY_EDGE_AUDIT_QUEUE_BYTES): %.*s event dropped",
               (int)m->u.audit.kind.len, m->u.audit.kind.ptr);
    }
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

int edge_audit_metrics_render(lk_buf_t *out)
{
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
    return n > 0 && (size_t)n < sizeof text ? lk_buf_append(out, text, (size_t)n) : -1;
}
