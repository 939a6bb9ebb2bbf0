/*  edge_metrics - the edge's Prometheus metrics (text exposition format 0.0.4). */
#include "edge_metrics.h"

#include "edge_audit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "edge.h"
#include "edge_http.h"
#include "lk_util.h"

static const double BUCKETS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,     0.25,   0.5,   1,      2.5,   10,   60};
#define NB (sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct {
    uint64_t counts[NB]; /* per bucket (not cumulative) */
    uint64_t count;
    double sum;
} histo_t;

static void observe(histo_t *h, double v)
{
    size_t i = 0;
    while (i < NB && v > BUCKETS[i])
        i++;
    if (i < NB) h->counts[i]++;
    h->count++;
    h->sum += v;
}

#define MAX_SERIES 128
typedef struct {
    char endpoint[32], decision[16];
    int status;
    uint64_t n;
} req_series_t;

static req_series_t s_req[MAX_SERIES];
static size_t s_nreq;
static histo_t s_req_seconds, s_upstream_seconds, s_call_seconds[EDGE_SVC_COUNT];
static uint64_t s_call_timeouts[EDGE_SVC_COUNT];
static uint64_t s_finished; /* agent requests finished (edge_metrics_request calls) */

static uint64_t s_held;

void edge_metrics_held_add(int delta)
{
    if (delta < 0 && s_held == 0) return;
    s_held = delta < 0 ? s_held - 1 : s_held + 1;
}

uint64_t edge_metrics_held(void)
{
    return s_held;
}

uint64_t edge_metrics_inflight(void)
{
    uint64_t begun = g_edge ? g_edge->stats.requests : 0;
    return begun > s_finished ? begun - s_finished : 0;
}

void edge_metrics_request(const char *endpoint, const char *decision, int status, double seconds)
{
    if (!decision) decision = "none";
    s_finished++;
    observe(&s_req_seconds, seconds);
    for (size_t i = 0; i < s_nreq; i++) {
        req_series_t *r = &s_req[i];
        if (r->status == status && strcmp(r->endpoint, endpoint) == 0 && strcmp(r->decision, decision) == 0) {
            r->n++;
            return;
        }
    }
    if (s_nreq == MAX_SERIES) return; /* bounded: labels come from a small closed set, this never fills */
    req_series_t *r = &s_req[s_nreq++];
    snprintf(r->endpoint, sizeof r->endpoint, "%s", endpoint);
    snprintf(r->decision, sizeof r->decision, "%s", decision);
    r->status = status;
    r->n = 1;
}

void edge_metrics_upstream(double seconds)
{
    observe(&s_upstream_seconds, seconds);
}

void edge_metrics_call(edge_svc_t svc, double seconds)
{
    if (svc >= EDGE_SVC_COUNT) return;
    if (seconds < 0)
        s_call_timeouts[svc]++;
    else
        observe(&s_call_seconds[svc], seconds);
}

static int put(lk_buf_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(lk_buf_t *out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return -1;
    return lk_buf_append(out, line, (size_t)n);
}

static int put_histo(lk_buf_t *out, const char *name, const char *labels, const histo_t *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i < NB; i++) {
        cum += h->counts[i];
        if (put(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, BUCKETS[i],
                (unsigned long long)cum))
            return -1;
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    if (put(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)h->count) ||
        put(out, "%s_sum%s%s%s %.9f\n", name, open, labels, close, h->sum) ||
        put(out, "%s_count%s%s%s %llu\n", name, open, labels, close, (unsigned long long)h->count))
        return -1;
    return 0;
}

int edge_metrics_render(lk_buf_t *out)
{
    int rc = 0;
    rc |= put(out, "# HELP lumkey_edge_requests_total Agent API requests answered, by endpoint, decision and "
                   "HTTP status.\n# TYPE lumkey_edge_requests_total counter\n");
    for (size_t i = 0; i < s_nreq; i++)
        rc |= put(out, "lumkey_edge_requests_total{endpoint=\"%s\",decision=\"%s\",status=\"%d\"} %llu\n",
                  s_req[i].endpoint, s_req[i].decision, s_req[i].status, (unsigned long long)s_req[i].n);
    rc |= put(out, "# HELP lumkey_edge_request_seconds Time from a request's arrival to its last byte.\n"
                   "# TYPE lumkey_edge_request_seconds histogram\n");
    rc |= put_histo(out, "lumkey_edge_request_seconds", "", &s_req_seconds);
    rc |= put(out, "# HELP lumkey_edge_upstream_seconds Time from sending a provider request to its response "
                   "head.\n# TYPE lumkey_edge_upstream_seconds histogram\n");
    rc |= put_histo(out, "lumkey_edge_upstream_seconds", "", &s_upstream_seconds);
    rc |= put(out, "# HELP lumkey_edge_worker_call_seconds Round trip of a call to a worker, by service.\n"
                   "# TYPE lumkey_edge_worker_call_seconds histogram\n");
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        char labels[48];
        snprintf(labels, sizeof labels, "service=\"%s\"", edge_svc_name((edge_svc_t)i));
        rc |= put_histo(out, "lumkey_edge_worker_call_seconds", labels, &s_call_seconds[i]);
    }
    rc |= put(out, "# HELP lumkey_edge_worker_call_timeouts_total Worker calls that got no answer in time.\n"
                   "# TYPE lumkey_edge_worker_call_timeouts_total counter\n");
    for (int i = 0; i < EDGE_SVC_COUNT; i++)
        rc |= put(out, "lumkey_edge_worker_call_timeouts_total{service=\"%s\"} %llu\n",
                  edge_svc_name((edge_svc_t)i), (unsigned long long)s_call_timeouts[i]);
    rc |= put(out, "# HELP lumkey_edge_worker_up Whether the worker answered a ping in the last 3 seconds.\n"
                   "# TYPE lumkey_edge_worker_up gauge\n");
    int64_t now = lk_now_ms();
    for (int i = 0; i < EDGE_SVC_COUNT; i++) {
        int64_t last = edge_rpc_last_pong_ms(g_edge->rpc, (edge_svc_t)i);
        rc |= put(out, "lumkey_edge_worker_up{service=\"%s\"} %d\n", edge_svc_name((edge_svc_t)i),
                  last > 0 && now - last < 3000);
    }
    rc |= put(out,
              "# HELP lumkey_edge_keycache_hits_total Requests whose key hash came from the edge cache.\n"
              "# TYPE lumkey_edge_keycache_hits_total counter\nlumkey_edge_keycache_hits_total %llu\n",
              (unsigned long long)g_edge->stats.keycache_hits);
    rc |= put(out,
              "# HELP lumkey_edge_ready Whether the edge reports ready (not stopping).\n"
              "# TYPE lumkey_edge_ready gauge\nlumkey_edge_ready %d\n",
              !g_edge->stopping && !g_edge->draining);
    rc |= put(out,
              "# HELP lumkey_edge_requests_in_flight Agent requests begun and not yet finished.\n"
              "# TYPE lumkey_edge_requests_in_flight gauge\nlumkey_edge_requests_in_flight %llu\n",
              (unsigned long long)edge_metrics_inflight());
    rc |= put(out,
              "# HELP lumkey_edge_held_requests Agent requests and answers held for an approval.\n"
              "# TYPE lumkey_edge_held_requests gauge\nlumkey_edge_held_requests %llu\n",
              (unsigned long long)edge_metrics_held());
    edge_rpc_stats_t st = edge_rpc_stats(g_edge->rpc);
    rc |= put(out,
              "# HELP lumkey_edge_worker_call_retries_total Worker calls sent again to another replica after "
              "a timeout.\n# TYPE lumkey_edge_worker_call_retries_total counter\n"
              "lumkey_edge_worker_call_retries_total %llu\n",
              (unsigned long long)st.retries);
    rc |=
        put(out, "# HELP lumkey_edge_worker_replicas Worker replicas the edge is connected to, by service.\n"
                 "# TYPE lumkey_edge_worker_replicas gauge\n");
    for (int i = 0; i < EDGE_SVC_COUNT; i++)
        rc |= put(out, "lumkey_edge_worker_replicas{service=\"%s\"} %d\n", edge_svc_name((edge_svc_t)i),
                  edge_rpc_replicas(g_edge->rpc, (edge_svc_t)i));
    rc |= edge_audit_metrics_render(out);
    return rc ? -1 : 0;
}

int edge_metrics_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    static h2o_generator_t generator = {NULL, NULL};
    char rid[LK_RID_LEN + 1];
    lk_rid_new(rid);
    lk_buf_t out;
    lk_buf_init(&out, 0);
    if (edge_metrics_render(&out) != 0) {
        lk_buf_free(&out);
        edge_http_send_error(req, 500, rid, NULL, "internal_error", "Metrics could not be rendered.");
        return 0;
    }
    h2o_iovec_t body = h2o_strdup(&req->pool, (const char *)out.data, out.len);
    lk_buf_free(&out);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    edge_http_add_common_headers(req, 200, rid);
    h2o_start_response(req, &generator);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
    return 0;
}
