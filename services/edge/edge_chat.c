/*  edge_chat - one model-API request, from the agent to the provider and back.
 *
 *  Serves every dialect in edge_api's table (chat completions, Anthropic
 *  messages, Responses, embeddings) with the same flow; the table row says
 *  where the key is, the error shape, the upstream path per provider kind and
 *  how a stream ends.
 *
 *  The steps of one request (each a callback of the previous):
 *    parse (bounded body, key format, JSON view)
 *    -> vault KEY_HASH -> policy DECIDE -> [approval HOLD]
 *    -> audit "request.accepted" (durable, awaited: fail closed)
 *       together with vault CRED_GET
 *    -> provider (pooled HTTP/1.1, verified TLS), answer relayed:
 *       JSON buffered and checked; SSE event by event as it arrives
 *    -> audit "request.completed" (status, usage, latency).
 *  Every refusal is answered in OpenAI's error shape and audited as
 *  "request.denied". The chat state lives in the request's memory pool; when
 *  the client goes away its dispose callback cancels whatever is in flight.
 */
#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "edge.h"
#include "edge_api.h"
#include "edge_audit.h"
#include "edge_policy.h"
#include "edge_http.h"
#include "edge_metrics.h"
#include "edge_upstream.h"
#include "lk_key.h"
#include "lk_log.h"
#include "lk_sse.h"
#include "lk_util.h"

typedef struct {
    h2o_generator_t gen; /* first: the streaming generator */
    h2o_req_t *req;
    const edge_api_t *api; /* the dialect */
    edge_kind_t kind;      /* the routed provider's kind */
    h2o_iovec_t fwd_body;  /* what goes upstream: the client's body, or policy's rewrite */
    char rid[LK_RID_LEN + 1];
    int64_t t0_us;
    edge_call_t *call, *call2;
    edge_upstream_req_t *up;
    /* what the agent asked */
    char model[256];
    int stream, include_usage;
    char key_pub_id[32];
    uint8_t key_hash[LK_PROTO_HASH_LEN];
    uint8_t key_tag[EDGE_KEYCACHE_TAG_LEN]; /* cache tag of the presented key */
    char source_ip[64];
    char trace_id[33];
    char traceparent[64];
    /* what policy answered */
    const char *tenant, *key_id, *user, *provider_id, *provider_kind, *base_url, *cred_id, *upstream_model;
    /* the fallback route, if policy gave one (a route's fallback) */
    const char *provider_id2, *provider_kind2, *base_url2, *cred_id2, *upstream_model2;
    int fallback_used; /* the upstream call now goes to the fallback route */
    /* the route being called: the first, then possibly the fallback */
    const char *up_url, *up_umodel;
    const char *policy_id, *rule_id, *decision;
    int64_t policy_version;
    char key_agent[128], team[128]; /* from the key's metadata (policy) */
    int answer_rules;               /* the policy inspects answers: wait for it before forwarding */
    int64_t price_in, price_out;    /* micro-USD per million tokens from the policy, -1 unknown */
    int reserved;                   /* policy reserved budget: SETTLE when the request ends */
    const char *anomaly, *hdp;      /* issue 10: JSON objects from DECIDE_REP, copied into audit events */
    edge_policy_ref_t *pol;         /* the compiled policy (answer side), held until dispose */
    edge_policy_wait_t *pol_wait;   /* while it loads */
    lk_policy_stream_t *pstream;    /* the streamed answer's filter */
    int policy_blocked;             /* the filter ended the stream */
    /* a held request: polled until decided; streams get SSE keep-alives meanwhile */
    char hold_id[64];
    int64_t hold_exp_ms;
    unsigned hold_polls;
    h2o_timeout_entry_t hold_timer;
    int early_sse;    /* the SSE response was started while held */
    int held_counted; /* counted in lumkey_edge_held_requests while held */
    /* an answer held by policy (a tool call, or text): events kept until a human decides */
    int answer_hold;    /* 1 while held */
    lk_buf_t held_q;    /* [u32 event len][event][u32 data len][data]... from the one that held */
    int up_ended;       /* the provider finished while the answer was held */
    const char *up_err; /* how it finished */
    /* accept + credential, in parallel */
    int accept_done, cred_done;
    lk_buf_t cred_head; /* secret: the provider auth header line */
    /* the provider's answer */
    int upstream_status;
    int64_t up_t0_us; /* when the provider request was started */
    int streaming;    /* response headers sent, SSE relay mode */
    int http_status;  /* what the agent got */
    lk_buf_t resp;    /* buffered body (JSON answers, errors) */
    lk_sse_t sse;
    lk_buf_t pending, inflight;
    int sending, upstream_done, final_sent, saw_done;
    int64_t prompt_tokens, completion_tokens, total_tokens;
    const char *error_code;
    int audited; /* the closing event (completed or denied) was sent */
    /* audit context */
    char agent[256];    /* User-Agent, printable ASCII only */
    char approver[128]; /* who decided a hold */
    char req_sha[65];   /* hex SHA-256 of the request body, once computed */
    int sha_failed;
    EVP_MD_CTX *ans_sha; /* SHA-256 of the streamed answer as relayed (made on the first event) */
} chat_t;

/* ---------------------------------------------------------------- audit -- */

/* Request and answer digests for the audit trail. OpenSSL's SHA-256 (it uses
 * the CPU's SHA extensions where present) is several times cheaper per byte
 * than libsodium's portable one, and it runs twice on every request. The
 * algorithm is fetched once per process. */
static EVP_MD *sha256_md(void)
{
    static EVP_MD *md;
    if (!md) md = EVP_MD_fetch(NULL, "SHA256", NULL);
    return md;
}

static int sha256(uint8_t out[32], const void *data, size_t len)
{
    unsigned int n = 0;
    EVP_MD *md = sha256_md();
    return md && EVP_Digest(data, len, out, &n, md, NULL) == 1 && n == 32 ? 0 : -1;
}

/* The streamed answer's digest, fed as events are relayed; -1 stops it (the
 * audit event then carries no answer digest rather than a wrong one). */
static void sha256_stream_update(chat_t *c, const void *data, size_t len)
{
    if (c->sha_failed) return;
    if (!c->ans_sha) {
        EVP_MD *md = sha256_md();
        c->ans_sha = EVP_MD_CTX_new();
        if (!md || !c->ans_sha || EVP_DigestInit_ex(c->ans_sha, md, NULL) != 1) c->sha_failed = 1;
    }
    if (!c->sha_failed && EVP_DigestUpdate(c->ans_sha, data, len) != 1) c->sha_failed = 1;
}

static int sha256_stream_final(chat_t *c, uint8_t out[32])
{
    sha256_stream_update(c, "", 0); /* an empty stream still has a digest */
    if (c->sha_failed) return -1;
    EVP_MD_CTX *t = EVP_MD_CTX_new(); /* final on a copy: a resent event computes it again */
    unsigned int n = 0;
    int ok = t && EVP_MD_CTX_copy_ex(t, c->ans_sha) == 1 && EVP_DigestFinal_ex(t, out, &n) == 1 && n == 32;
    EVP_MD_CTX_free(t);
    return ok ? 0 : -1;
}

static void fill_audit(chat_t *c, lk_msg_t *m, const char *kind, char *event_id)
{
    memset(m, 0, sizeof *m);
    lk_uuid_derive(event_id, c->rid, kind);
    m->env.rid = lk_str(c->rid);
    m->env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m->env.type = LK_MSG_AUDIT;
    lk_audit_t *a = &m->u.audit;
    a->event_id = lk_str(event_id);
    a->kind = lk_str(kind);
    a->time_ms = lk_now_ms();
    a->tenant = lk_str(c->tenant);
    a->key_id = lk_str(c->key_id ? c->key_id : (c->key_pub_id[0] ? c->key_pub_id : NULL));
    a->user = lk_str(c->user);
    a->source_ip = lk_str(c->source_ip);
    a->endpoint = lk_str(c->api->endpoint);
    a->provider_id = lk_str(c->provider_id);
    a->model = lk_str(c->model);
    a->upstream_model = lk_str(c->upstream_model);
    a->decision = lk_str(c->decision);
    a->policy_id = lk_str(c->policy_id);
    a->policy_version = c->policy_version;
    a->rule_id = lk_str(c->rule_id);
    a->http_status = c->http_status;
    a->upstream_status = c->upstream_status;
    a->latency_us = lk_mono_us() - c->t0_us;
    a->prompt_tokens = c->prompt_tokens;
    a->completion_tokens = c->completion_tokens;
    a->total_tokens = c->total_tokens;
    a->error_code = lk_str(c->error_code);
    a->trace_id = lk_str(c->trace_id);
    a->stream = c->stream;
    a->agent = lk_str(c->key_agent[0] ? c->key_agent : c->agent); /* the key's agent, else User-Agent */
    a->approver = lk_str(c->approver);
    if (c->price_in >= 0 && c->price_out >= 0 && c->prompt_tokens >= 0 && c->completion_tokens >= 0) {
        /* the real cost from the policy's price table (USD per Mtok x tokens = micro-USD), rounded up */
        int64_t num = c->prompt_tokens * c->price_in + c->completion_tokens * c->price_out;
        a->cost_micros = (num + 999999) / 1000000;
    }
    if (!c->req_sha[0] && c->req->entity.len) {
        uint8_t d[32];
        if (sha256(d, c->req->entity.base, c->req->entity.len) == 0) lk_hex(c->req_sha, d, sizeof d);
    }
    a->request_sha = lk_str(c->req_sha);
    /* fallback (issue 7): set only when the second route was used */
    a->provider_id2 = lk_str(c->fallback_used ? c->provider_id2 : NULL);
    a->upstream_model2 = lk_str(c->fallback_used ? c->upstream_model2 : NULL);
    a->anomaly = lk_str(c->anomaly); /* issue 10: as policy computed them */
    a->hdp = lk_str(c->hdp);
}

/* The answer's digest (and, for a buffered answer, its text) on a closing event. */
static void fill_answer(chat_t *c, lk_audit_t *a, char hex[65])
{
    uint8_t d[32];
    if (c->streaming) {
        if (sha256_stream_final(c, d) != 0) return;
    } else if (c->resp.len) {
        if (sha256(d, c->resp.data, c->resp.len) != 0) return;
        a->answer_body = (lk_str_t){(const char *)c->resp.data, c->resp.len};
    } else {
        return;
    }
    lk_hex(hex, d, sizeof d);
    a->answer_sha = lk_str(hex);
}

/* The last event of a request: "request.completed" or "request.denied". Sent
 * once, then re-sent by edge_audit until audit acknowledges it (bounded). */
static void audit_close(chat_t *c, const char *kind)
{
    if (c->audited) return;
    c->audited = 1;
    if (edge_audit_off()) return; /* LUMKEY_AUDIT_MODE=off: benchmark only */
    char event_id[LK_UUID_LEN + 1];
    lk_msg_t m;
    char ans_hex[65];
    fill_audit(c, &m, kind, event_id);
    fill_answer(c, &m.u.audit, ans_hex);
    edge_audit_send_closing(&m); /* goes out with the next accept (or within 2 ms) */
}

/* ------------------------------------------------------------- answers -- */

/* An error answer in the client's API shape. */
static void stream_error(chat_t *c, const char *code, const char *message);
static void chat_flush(chat_t *c);

static void send_err(chat_t *c, int status, const char *rid, const char *type, const char *code,
                     const char *message)
{
    if (c->early_sse) { /* the stream was opened while the request was held: the error is its last event */
        stream_error(c, code, message);
        chat_flush(c);
        return;
    }
    edge_api_send_error(c->api, c->req, status, rid, type, code, message);
}

static void deny(chat_t *c, int status, const char *code, const char *message)
{
    c->http_status = status;
    c->error_code = code;
    if (!c->decision) c->decision = status >= 500 ? "error" : "deny";
    g_edge->stats.denied++;
    audit_close(c, "request.denied");
    send_err(c, status, c->rid, NULL, code, message);
}

/* A failure after the request was accepted (the provider was, or was about to be, called). */
static void fail_after_accept(chat_t *c, int status, const char *code, const char *message)
{
    c->http_status = status;
    c->error_code = code;
    g_edge->stats.upstream_errors++;
    audit_close(c, "request.completed");
    send_err(c, status, c->rid, NULL, code, message);
}

static void unavailable(chat_t *c, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "Lumkey's %s service is unavailable; please retry.", what);
    deny(c, 503, "service_unavailable", msg);
}

/* An ERROR reply or a failed call, answered in the API's shape. */
static void worker_failed(chat_t *c, const lk_msg_t *reply, const char *what)
{
    if (!reply) {
        unavailable(c, what);
        return;
    }
    if (reply->env.type == LK_MSG_ERROR && reply->u.error.status == LK_ST_INTEGRITY) {
        /* tampered or moved ciphertext: refused, and the audit event says so */
        lk_log(LK_LOG_ERROR, c->rid, "a stored credential failed its integrity check: request refused");
        deny(c, 500, "credential_integrity_failed",
             "The stored provider credential failed its integrity check; the request was not sent.");
        return;
    }
    if (reply->env.type == LK_MSG_ERROR) {
        char msg[512];
        lk_str_copy(msg, sizeof msg, reply->u.error.message);
        int status = edge_http_status_of(reply->u.error.status);
        deny(c, status, status == 503 ? "service_unavailable" : "internal_error",
             msg[0] ? msg : "The request could not be processed.");
        return;
    }
    deny(c, 500, "internal_error", "Unexpected answer from an internal service.");
}

static lk_policy_ctx_t answer_ctx(const chat_t *c)
{
    lk_api_t api = lk_policy_api_of(c->api->endpoint);
    if (!api) api = LK_API_CHAT;
    return (lk_policy_ctx_t){.api = api,
                             .provider_id = c->provider_id,
                             .provider_kind = c->provider_kind,
                             .key_id = c->key_id,
                             .user = c->user,
                             .agent = c->key_agent[0] ? c->key_agent : NULL,
                             .team = c->team[0] ? c->team : NULL};
}

static const char *pool_str(chat_t *c, lk_str_t s)
{
    if (!s.len) return NULL;
    return h2o_strdup(&c->req->pool, s.ptr, s.len).base;
}

/* ------------------------------------------------------- SSE relaying -- */

static void chat_flush(chat_t *c);

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    chat_t *c = (chat_t *)gen;
    c->sending = 0;
    c->inflight.len = 0;
    chat_flush(c);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    chat_t *c = (chat_t *)gen;
    if (c->up) {
        edge_upstream_cancel(c->up);
        c->up = NULL;
    }
    if (!c->error_code) c->error_code = "client_closed";
}

static void chat_flush(chat_t *c)
{
    if (c->sending || c->final_sent) return;
    int final = c->upstream_done;
    if (c->pending.len == 0 && !final) return;
    lk_buf_t t = c->inflight;
    c->inflight = c->pending;
    c->pending = t;
    c->pending.len = 0;
    if (c->inflight.len) sha256_stream_update(c, c->inflight.data, c->inflight.len);
    h2o_iovec_t iov = h2o_iovec_init(c->inflight.data, c->inflight.len);
    if (final) {
        c->final_sent = 1;
        audit_close(c, "request.completed");
    }
    c->sending = 1;
    h2o_send(c->req, &iov, iov.len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static int append(lk_buf_t *b, const char *s, size_t n)
{
    return lk_buf_append(b, s, n);
}

/* Ends the stream with an error event the SDKs raise on. */
static void stream_error(chat_t *c, const char *code, const char *message)
{
    if (!c->error_code || strcmp(c->error_code, "client_closed") == 0) c->error_code = code;
    if (edge_api_stream_error(c->api, &c->pending, code, message) != 0)
        lk_log(LK_LOG_ERROR, c->rid, "out of memory writing a stream error");
    c->upstream_done = 1;
}

/* Token counts from an answer or an event, whatever the dialect's shape. */
static void take_usage(chat_t *c, json_t *obj)
{
    edge_usage_t u = {c->prompt_tokens, c->completion_tokens, c->total_tokens};
    edge_api_take_usage(&u, obj);
    c->prompt_tokens = u.in;
    c->completion_tokens = u.out;
    c->total_tokens = u.total;
}

static void finish_usage(chat_t *c)
{
    edge_usage_t u = {c->prompt_tokens, c->completion_tokens, c->total_tokens};
    edge_api_finish_usage(&u);
    c->total_tokens = u.total;
}

/* Writes one SSE event to the agent's pending output. 0 / -1. */
static int emit_event(chat_t *c, const char *event, size_t event_len, const char *data, size_t data_len)
{
    return edge_api_sse_write(&c->pending, event, event_len, data, data_len);
}

/* The policy's stream filter hands on what the agent may see (emit_event). */
static void on_policy_emit(void *ud, const char *event, size_t event_len, const char *data, size_t data_len)
{
    chat_t *c = ud;
    if (emit_event(c, event, event_len, data, data_len) != 0)
        lk_log(LK_LOG_ERROR, c->rid, "out of memory relaying a filtered event");
}

static int open_answer_hold(chat_t *c);

/* Keeps an event while the answer is held (bounded by the response limit). */
static int keep_event(chat_t *c, const char *event, size_t event_len, const char *data, size_t data_len)
{
    uint32_t el = (uint32_t)event_len, dl = (uint32_t)data_len;
    if (c->held_q.len + event_len + data_len + 8 > g_edge->cfg.max_response_bytes) {
        c->sse.error = "the held answer grew beyond the response limit";
        return -1;
    }
    if (lk_buf_append(&c->held_q, &el, 4) != 0 || (el && lk_buf_append(&c->held_q, event, el) != 0) ||
        lk_buf_append(&c->held_q, &dl, 4) != 0 || (dl && lk_buf_append(&c->held_q, data, dl) != 0)) {
        c->sse.error = "out of memory keeping the held answer";
        return -1;
    }
    return 0;
}

/* One event through the answer-side policy. A block ends the stream: the
 * filter has emitted the error event; nothing more is relayed. */
static int policy_feed(chat_t *c, const char *event, size_t event_len, const char *data, size_t data_len)
{
    if (c->answer_hold) return keep_event(c, event, event_len, data, data_len);
    int rc = lk_policy_stream_feed(c->pstream, event, event_len, data, data_len);
    if (rc == LK_PSTREAM_OK) return 0;
    if (rc == LK_PSTREAM_HOLD) {
        if (keep_event(c, event, event_len, data, data_len) != 0) return -1;
        return open_answer_hold(c) == 0 ? 0 : -1;
    }
    if (rc == LK_PSTREAM_BLOCKED) {
        const lk_policy_result_t *r = lk_policy_stream_result(c->pstream);
        c->policy_blocked = 1;
        c->decision = "block";
        c->rule_id = pool_str(c, lk_str(r->rule_id));
        c->error_code = "blocked_by_policy";
        return -1;
    }
    c->sse.error = "the answer could not be inspected by policy (too large or malformed)";
    return -1;
}

/* THE relay point: every SSE event of every API passes here once, as
 * (event name, data), in order: through the answer-side policy's stream
 * filter when the policy has answer rules (it may hold back, rewrite or end
 * the stream, keeping the API's shape), else straight to the agent. */
static int relay_event(chat_t *c, const char *event, size_t event_len, const char *data, size_t data_len)
{
    if (c->pstream) return policy_feed(c, event, event_len, data, data_len);
    return emit_event(c, event, event_len, data, data_len);
}

static int on_sse_event(void *ctx, const char *event, size_t event_len, const char *data, size_t data_len)
{
    chat_t *c = ctx;
    if (c->saw_done && !c->api->done_event) return -1; /* nothing may follow [DONE] */
    if (!c->api->done_event && data_len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        c->saw_done = 1;
        return relay_event(c, NULL, 0, data, data_len);
    }
    json_error_t jerr;
    json_t *obj = json_loadb(data, data_len, 0, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        c->sse.error = "an event's data is not a JSON object";
        return -1;
    }
    if (memmem(data, data_len, "\"usage\"", 7)) take_usage(c, obj);
    if (c->api->done_event) { /* typed events: the name, or the data's "type" */
        const char *type = json_string_value(json_object_get(obj, "type"));
        size_t dl = strlen(c->api->done_event);
        if ((event_len == dl && memcmp(event, c->api->done_event, dl) == 0) ||
            (type && strcmp(type, c->api->done_event) == 0) ||
            (type && strcmp(type, "response.failed") == 0) ||
            (type && strcmp(type, "response.incomplete") == 0))
            c->saw_done = 1;
    }
    json_decref(obj);
    return relay_event(c, event, event_len, data, data_len);
}

/* ----------------------------------------------------- provider answer -- */

/* Anthropic's SDKs read the request id from request-id (errors carry it already). */
static void add_anthropic_request_id(chat_t *c)
{
    if (c->api->shape == EDGE_SHAPE_ANTHROPIC)
        h2o_add_header_by_str(&c->req->pool, &c->req->res.headers, H2O_STRLIT("request-id"), 0, NULL, c->rid,
                              strlen(c->rid));
}

static int up_on_head(void *data, int status, h2o_iovec_t ctype)
{
    chat_t *c = data;
    c->upstream_status = status;
    edge_metrics_upstream((double)(lk_mono_us() - c->up_t0_us) / 1e6);
    int is_sse = ctype.len >= 17 && strncasecmp(ctype.base, "text/event-stream", 17) == 0;
    if (status == 200 && c->stream && c->api->streams && is_sse) {
        h2o_req_t *req = c->req;
        c->streaming = 1;
        c->http_status = 200;
        lk_sse_init(&c->sse, 0);
        if (c->early_sse) { /* headers went out while the request was held */
            if (c->pol) {
                lk_policy_ctx_t ctx = answer_ctx(c);
                c->pstream = lk_policy_stream_new(edge_policy_get(c->pol), &ctx, on_policy_emit, c);
                if (!c->pstream) {
                    c->up = NULL;
                    fail_after_accept(c, 500, "internal_error",
                                      "Out of memory while starting the answer filter.");
                    return -1;
                }
            }
            return 0;
        }
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/event-stream"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
        edge_http_add_common_headers(req, 200, c->rid);
        add_anthropic_request_id(c);
        c->gen.proceed = on_proceed;
        c->gen.stop = on_stop;
        if (c->pol) {
            lk_policy_ctx_t ctx = answer_ctx(c);
            c->pstream = lk_policy_stream_new(edge_policy_get(c->pol), &ctx, on_policy_emit, c);
            if (!c->pstream) { /* nothing sent yet: answered here (no up_on_done follows a refused head) */
                c->streaming = 0;
                c->up = NULL;
                fail_after_accept(c, 500, "internal_error",
                                  "Out of memory while starting the answer filter.");
                return -1;
            }
        }
        h2o_start_response(req, &c->gen);
    }
    return 0;
}

static int up_on_body(void *data, const char *bytes, size_t len)
{
    chat_t *c = data;
    if (c->streaming) {
        if (lk_sse_feed(&c->sse, bytes, len, on_sse_event, c) != 0) {
            if (c->policy_blocked) { /* the filter sent the error event */
                lk_log(LK_LOG_INFO, c->rid, "answer blocked mid-stream by policy rule %s",
                       c->rule_id ? c->rule_id : "?");
                c->up = NULL;
                c->upstream_done = 1;
                chat_flush(c);
                return -1;
            }
            lk_log(LK_LOG_WARN, c->rid, "malformed event stream from the provider: %s",
                   c->sse.error ? c->sse.error : "?");
            c->up = NULL; /* aborted by returning -1 */
            stream_error(c, "upstream_malformed_stream",
                         "The provider sent a malformed event stream; the answer was cut off.");
            chat_flush(c);
            return -1;
        }
        chat_flush(c);
        return 0;
    }
    if (c->resp.len + len > g_edge->cfg.max_response_bytes) {
        c->up = NULL;
        fail_after_accept(c, 502, "upstream_response_too_large", "The provider's answer is too large.");
        return -1;
    }
    if (append(&c->resp, bytes, len) != 0) {
        c->up = NULL;
        fail_after_accept(c, 502, "internal_error", "Out of memory while reading the provider's answer.");
        return -1;
    }
    return 0;
}

/* Masks anything that looks like a credential (long runs of key characters). */
static void scrub_secrets(char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n &&
               (isalnum((unsigned char)s[j]) || s[j] == '-' || s[j] == '_' || s[j] == '*' || s[j] == '.'))
            j++;
        if (j - i >= 16) memset(s + i, '*', j - i);
        i = j + 1;
    }
}

static void relay_upstream_error(chat_t *c)
{
    int st = c->upstream_status;
    char msg[600] = "";
    const char *type = NULL;
    json_t *root = json_loadb((const char *)c->resp.data, c->resp.len, 0, NULL);
    json_t *err = json_is_object(root) ? json_object_get(root, "error") : NULL;
    if (json_is_object(err)) {
        const char *m = json_string_value(json_object_get(err, "message"));
        type = json_string_value(json_object_get(err, "type"));
        if (m) snprintf(msg, sizeof msg, "%s", m);
    }
    char full[800];
    if (st < 400) {
        /* a redirect (or any non-error, non-2xx): never followed, never relayed as such */
        json_decref(root);
        snprintf(full, sizeof full,
                 "The provider answered HTTP %d; Lumkey does not follow provider redirects.", st);
        fail_after_accept(c, 502, "upstream_redirect", full);
        return;
    }
    if (st == 401 || st == 403) {
        /* the provider refused Lumkey's stored credential: not the agent's fault */
        snprintf(full, sizeof full, "The provider rejected the credential Lumkey holds for it (HTTP %d).",
                 st);
        json_decref(root);
        fail_after_accept(c, 502, "upstream_auth_failed", full);
        return;
    }
    scrub_secrets(msg);
    snprintf(full, sizeof full, "The provider answered HTTP %d%s%s", st, msg[0] ? ": " : ".", msg);
    char type_copy[64];
    snprintf(type_copy, sizeof type_copy, "%s", type ? type : edge_http_error_type(st));
    json_decref(root);
    c->http_status = st;
    c->error_code = "upstream_error";
    audit_close(c, "request.completed");
    send_err(c, st, c->rid, type_copy, "upstream_error", full);
}

static int try_fallback(chat_t *c, const char *why);

static void up_on_done(void *data, const char *err, int before_head)
{
    chat_t *c = data;
    c->up = NULL;
    /* nothing reached the client yet: a failed first route may go to the fallback */
    if (!c->streaming && (err || c->upstream_status >= 500) &&
        try_fallback(c, err ? err : "provider answered 5xx") == 0)
        return;
    if (c->streaming) {
        if (c->answer_hold) { /* finished while a human looks at the answer: ends once decided */
            c->up_ended = 1;
            c->up_err = err ? "error" : NULL;
            return;
        }
        if (c->pstream && !err && lk_policy_stream_finish(c->pstream) == LK_PSTREAM_BLOCKED) {
            c->policy_blocked = 1;
            c->decision = "block";
            c->error_code = "blocked_by_policy";
            c->upstream_done = 1;
            chat_flush(c);
            return;
        }
        if (err)
            stream_error(c, "upstream_stream_error", "The connection to the provider failed mid-stream.");
        else if (!c->saw_done || lk_sse_pending(&c->sse))
            stream_error(c, "upstream_stream_truncated",
                         "The provider closed the stream before it was complete.");
        finish_usage(c);
        c->upstream_done = 1;
        chat_flush(c);
        return;
    }
    if (err) {
        int timeout = strstr(err, "timeout") != NULL;
        lk_log(LK_LOG_WARN, c->rid, "provider call failed: %s", err);
        fail_after_accept(c, timeout ? 504 : 502, timeout ? "upstream_timeout" : "upstream_unreachable",
                          timeout ? "The provider did not answer in time."
                                  : "Lumkey could not reach the provider.");
        return;
    }
    if (c->upstream_status < 200 || c->upstream_status >= 300) {
        relay_upstream_error(c);
        return;
    }
    json_t *root = json_loadb((const char *)c->resp.data, c->resp.len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        fail_after_accept(c, 502, "upstream_malformed_response",
                          "The provider sent an answer that is not JSON.");
        return;
    }
    take_usage(c, root);
    finish_usage(c);
    if (!c->pol) json_decref(root);
    if (c->pol) { /* the answer is parsed once: the policy reads the same tree */
        lk_policy_result_t r;
        memset(&r, 0, sizeof r);
        lk_policy_ctx_t ctx = answer_ctx(c);
        int rc = lk_policy_eval_answer_json(edge_policy_get(c->pol), &ctx, root, &r);
        json_decref(root);
        if (rc == 0 && r.action == LK_ACT_HOLD) { /* a human decides; the answer waits in c->resp */
            c->rule_id = pool_str(c, lk_str(r.rule_id));
            lk_policy_result_clear(&r);
            if (open_answer_hold(c) != 0) {
                c->answer_hold = 0;
                fail_after_accept(c, 503, "service_unavailable",
                                  "The answer needs approval and the approval service is unavailable.");
            }
            return;
        }
        if (rc != 0 || r.action == LK_ACT_BLOCK) {
            c->decision = "block";
            c->rule_id = pool_str(c, lk_str(r.rule_id));
            char msg[300];
            snprintf(msg, sizeof msg, "%s",
                     rc != 0 ? "The provider's answer could not be inspected by policy, so it was withheld."
                     : r.message[0] ? r.message
                                    : "The model's answer was blocked by a Lumkey policy.");
            lk_policy_result_clear(&r);
            fail_after_accept(c, rc != 0 ? 502 : 403,
                              rc != 0 ? "upstream_malformed_response" : "blocked_by_policy", msg);
            return;
        }
        if (r.action == LK_ACT_REDACT && r.body) {
            if (!c->decision || strcmp(c->decision, "allow") == 0 || strcmp(c->decision, "log") == 0)
                c->decision = "redact";
            if (!c->rule_id) c->rule_id = pool_str(c, lk_str(r.rule_id));
            c->resp.len = 0;
            if (append(&c->resp, r.body, r.body_len) != 0) {
                lk_policy_result_clear(&r);
                fail_after_accept(c, 500, "internal_error", "Out of memory while redacting the answer.");
                return;
            }
        }
        lk_policy_result_clear(&r);
    }
    c->http_status = c->upstream_status;
    audit_close(c, "request.completed");
    add_anthropic_request_id(c);
    edge_http_send_json(c->req, c->upstream_status, c->rid, (const char *)c->resp.data, c->resp.len);
}

static const edge_upstream_cbs_t UP_CBS = {up_on_head, up_on_body, up_on_done};

/* The body with "model" set to the route's upstream model when it differs
 * from the requested name (an alias); else the body unchanged. 0 / -1. */
static int with_upstream_model(chat_t *c, h2o_iovec_t *body)
{
    if (!c->up_umodel || strcmp(c->up_umodel, c->model) == 0) return 0;
    json_t *root = json_loadb(body->base, body->len, 0, NULL);
    char *s = NULL;
    if (json_is_object(root) && json_object_set_new(root, "model", json_string(c->up_umodel)) == 0)
        s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) return -1;
    *body = h2o_strdup(&c->req->pool, s, strlen(s));
    free(s);
    return 0;
}

static void forward(chat_t *c)
{
    edge_origin_t origin;
    if (!c->up_url || edge_origin_parse(c->up_url, &origin) != 0) {
        lk_buf_free(&c->cred_head);
        fail_after_accept(c, 502, "provider_misconfigured", "The provider's base URL is not usable.");
        return;
    }
    char path[1024];
    if (edge_api_upstream_path(c->api, c->kind, origin.path, c->up_umodel, path, sizeof path) != 0) {
        lk_buf_free(&c->cred_head);
        fail_after_accept(c, 502, "provider_misconfigured",
                          "The provider's route cannot be used for this API.");
        return;
    }
    /* the allowlisted client headers; nothing else of the client's head goes upstream */
    if (edge_api_pass_headers(c->req, c->kind, c->traceparent, &c->cred_head) != 0) {
        lk_buf_free(&c->cred_head);
        fail_after_accept(c, 500, "internal_error", "Out of memory.");
        return;
    }
    c->up_t0_us = lk_mono_us();
    /* edge_origin_parse keeps origin.path; the API's path is the whole request path */
    origin.path[0] = '\0';
    h2o_iovec_t body = c->fwd_body;
    if (with_upstream_model(c, &body) != 0) {
        lk_buf_free(&c->cred_head);
        fail_after_accept(c, 500, "internal_error",
                          "The request body could not be prepared for the provider.");
        return;
    }
    c->up = edge_upstream_post(g_edge->upstreams, &origin, path, (const char *)c->cred_head.data,
                               c->cred_head.len, body, &UP_CBS, c);
    lk_buf_free(&c->cred_head); /* wiped: the upstream module holds its own copy until sent */
    if (!c->up && try_fallback(c, "connection failed at once") != 0)
        fail_after_accept(c, 502, "upstream_unreachable", "Lumkey could not reach the provider.");
}

static void maybe_forward(chat_t *c)
{
    if (c->accept_done && c->cred_done && (!c->answer_rules || c->pol)) forward(c);
}

/* The answer-side policy arrived (or could not be loaded: nothing is forwarded). */
static void on_answer_policy(void *ud, edge_policy_ref_t *ref)
{
    chat_t *c = ud;
    c->pol_wait = NULL;
    if (!ref) {
        edge_rpc_cancel(g_edge->rpc, c->call);
        edge_rpc_cancel(g_edge->rpc, c->call2);
        c->call = c->call2 = NULL;
        lk_buf_free(&c->cred_head);
        c->decision = "error";
        if (c->accept_done)
            fail_after_accept(c, 503, "policy_unavailable",
                              "Lumkey could not load the policy that inspects this answer; please retry.");
        else
            unavailable(c, "policy");
        return;
    }
    c->pol = ref;
    maybe_forward(c);
}

/* ----------------------------------------------------- worker replies -- */

static void on_accept(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call = NULL;
    if (reply && reply->env.type == LK_MSG_AUDIT_REP)
        edge_audit_learn(c->tenant, reply->u.audit_rep.fail_open);
    if ((!reply || reply->env.type != LK_MSG_AUDIT_REP) && edge_audit_is_fail_open(c->tenant)) {
        edge_audit_count_fail_open(c->rid, c->tenant);
        c->accept_done = 1;
        maybe_forward(c);
        return;
    }
    if (!reply || reply->env.type != LK_MSG_AUDIT_REP) {
        /* fail closed: nothing goes to the provider unless audit recorded it */
        edge_rpc_cancel(g_edge->rpc, c->call2);
        c->call2 = NULL;
        lk_buf_free(&c->cred_head);
        lk_log(LK_LOG_ERROR, c->rid, "audit could not record the request: refused (fail closed)");
        c->audited = 1; /* nothing more can be recorded either */
        c->http_status = 503;
        c->error_code = "audit_unavailable";
        send_err(c, 503, c->rid, NULL, "audit_unavailable",
                 "Lumkey could not record this request in its audit trail, so it was not sent. "
                 "Please retry.");
        return;
    }
    c->accept_done = 1;
    maybe_forward(c);
}

static void on_cred(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call2 = NULL;
    if (c->fallback_used) { /* the fallback's credential: the request is already accepted */
        lk_str_t fs = reply && reply->env.type == LK_MSG_CRED_GET_REP ? reply->u.cred_get_rep.secret
                                                                      : (lk_str_t){NULL, 0};
        if (!fs.ptr || edge_api_cred_header(c->kind, &c->cred_head, fs.ptr, fs.len) != 0) {
            lk_buf_free(&c->cred_head);
            fail_after_accept(c, 502, "fallback_unavailable",
                              "The provider failed and the fallback provider's credential is not available.");
            return;
        }
        forward(c);
        return;
    }
    if (!reply || reply->env.type != LK_MSG_CRED_GET_REP) {
        edge_rpc_cancel(g_edge->rpc, c->call);
        c->call = NULL;
        c->decision = "error";
        worker_failed(c, reply, "vault");
        return;
    }
    lk_str_t s = reply->u.cred_get_rep.secret;
    if (edge_api_cred_header(c->kind, &c->cred_head, s.ptr, s.len) != 0) {
        edge_rpc_cancel(g_edge->rpc, c->call);
        c->call = NULL;
        lk_buf_free(&c->cred_head);
        c->decision = "error";
        deny(c, 500, "credential_unusable", "The stored provider credential cannot be used.");
        return;
    }
    c->cred_done = 1;
    maybe_forward(c);
}

/* Switches to the fallback route (once): fetches its credential, then
 * forward() calls it. 0 if started, -1 if there is no fallback to try. */
static int try_fallback(chat_t *c, const char *why)
{
    if (c->fallback_used || !c->provider_id2 || !c->cred_id2 || c->streaming) return -1;
    edge_kind_t k2 = edge_api_kind(c->provider_kind2);
    if (!edge_api_kind_serves(c->api, k2)) return -1;
    lk_log(LK_LOG_WARN, c->rid, "provider %s failed (%s): trying the fallback %s", c->provider_id, why,
           c->provider_id2);
    c->fallback_used = 1;
    c->kind = k2;
    c->up_url = c->base_url2;
    c->up_umodel = c->upstream_model2;
    c->upstream_status = 0;
    c->resp.len = 0;
    lk_buf_free(&c->cred_head);
    lk_msg_t m = {0};
    m.env.type = LK_MSG_CRED_GET;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.cred_get.tenant = lk_str(c->tenant);
    m.u.cred_get.cred_id = lk_str(c->cred_id2);
    c->call2 = edge_rpc_call(g_edge->rpc, EDGE_SVC_VAULT, &m, on_cred, c);
    if (!c->call2) {
        fail_after_accept(c, 503, "service_unavailable",
                          "Lumkey's vault service is unavailable; please retry.");
        return 0; /* answered */
    }
    return 0;
}

static void start_accept(chat_t *c)
{
    char event_id[LK_UUID_LEN + 1];
    lk_msg_t m;
    if (!c->decision) c->decision = "allow";
    fill_audit(c, &m, "request.accepted", event_id);
    m.u.audit.request_body =
        (lk_str_t){c->req->entity.base, c->req->entity.len}; /* kept only if the tenant asks */
    if (!edge_audit_off()) edge_audit_flush(); /* deferred closing events share this accept's commit */
    c->call = edge_audit_off() ? NULL : edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_accept, c);
    if (!c->call && edge_audit_off()) { /* LUMKEY_AUDIT_MODE=off: benchmark only */
        edge_audit_count_off();
        c->accept_done = 1;
    } else if (!c->call && edge_audit_is_fail_open(c->tenant)) {
        edge_audit_count_fail_open(c->rid, c->tenant);
        c->accept_done = 1;
    } else if (!c->call) {
        c->audited = 1;
        lk_log(LK_LOG_ERROR, c->rid, "audit unreachable: request refused (fail closed)");
        c->http_status = 503;
        send_err(c, 503, c->rid, NULL, "audit_unavailable",
                 "Lumkey could not record this request in its audit trail, so it was not sent. "
                 "Please retry.");
        return;
    }
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_CRED_GET;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.cred_get.tenant = lk_str(c->tenant);
    m.u.cred_get.cred_id = lk_str(c->cred_id);
    c->call2 = edge_rpc_call(g_edge->rpc, EDGE_SVC_VAULT, &m, on_cred, c);
    if (!c->call2) {
        edge_rpc_cancel(g_edge->rpc, c->call);
        c->call = NULL;
        unavailable(c, "vault");
        return;
    }
    if (c->answer_rules &&
        edge_policy_acquire(c->rid, c->tenant, c->policy_id ? c->policy_id : "", c->policy_version,
                            on_answer_policy, c, &c->pol, &c->pol_wait) < 0) {
        edge_rpc_cancel(g_edge->rpc, c->call);
        edge_rpc_cancel(g_edge->rpc, c->call2);
        c->call = c->call2 = NULL;
        unavailable(c, "policy");
    }
}

/* ---------------------------------------------------------------- holds -- */

#define HOLD_POLL_MS      500
#define HOLD_KEEPALIVE_MS 10000

static h2o_timeout_t g_hold_poll;
static int g_hold_poll_ready;

static void on_hold(void *data, const lk_msg_t *reply);

/* Starts the SSE answer while the request is held, so that the agent sees
 * bytes (comments) instead of a silent connection. */
static void start_held_stream(chat_t *c)
{
    h2o_req_t *req = c->req;
    c->early_sse = 1;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    edge_http_add_common_headers(req, 200, c->rid);
    c->gen.proceed = on_proceed;
    c->gen.stop = on_stop;
    h2o_start_response(req, &c->gen);
    static const char HELD[] = ": held for approval\n\n";
    if (append(&c->pending, HELD, sizeof HELD - 1) == 0) chat_flush(c);
}

static void answer_hold_decided(chat_t *c, lk_hold_outcome_t outcome, const char *reason);

static void send_hold_wait(chat_t *c)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_HOLD_WAIT;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.hold_wait.tenant = lk_str(c->tenant);
    m.u.hold_wait.hold_id = lk_str(c->hold_id);
    c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_APPROVAL, &m, on_hold, c);
    if (c->call) return;
    if (lk_now_ms() < c->hold_exp_ms + 2000) { /* no approval worker right now (restarting): poll again */
        h2o_timeout_link(g_edge->loop, &g_hold_poll, &c->hold_timer);
        return;
    }
    c->decision = "error";
    if (c->answer_hold)
        answer_hold_decided(c, LK_HOLD_TIMED_OUT, "the approval service was unavailable");
    else
        unavailable(c, "approval");
}

static void held_done(chat_t *c);

static void on_hold_timer(h2o_timeout_entry_t *entry)
{
    chat_t *c = H2O_STRUCT_FROM_MEMBER(chat_t, hold_timer, entry);
    if (g_edge->stopping) { /* shutting down: a held request is released with a retryable 503 */
        held_done(c);
        c->decision = "error";
        lk_log(LK_LOG_INFO, c->rid, "released a held request: the edge is shutting down");
        if (c->answer_hold) {
            c->answer_hold = 0;
            if (c->streaming) {
                lk_buf_free(&c->held_q);
                if (c->up) {
                    edge_upstream_cancel(c->up);
                    c->up = NULL;
                }
                stream_error(c, "shutting_down",
                             "Lumkey is restarting while this answer was held; please retry.");
                chat_flush(c);
            } else {
                fail_after_accept(c, 503, "shutting_down",
                                  "Lumkey is restarting while this answer was held; please retry.");
            }
        } else {
            deny(c, 503, "shutting_down", "Lumkey is restarting while this request was held; please retry.");
        }
        return;
    }
    c->hold_polls++;
    if ((c->early_sse || c->streaming) && c->hold_polls % (HOLD_KEEPALIVE_MS / HOLD_POLL_MS) == 0) {
        static const char KEEP[] = ": keep-alive\n\n";
        if (append(&c->pending, KEEP, sizeof KEEP - 1) == 0) chat_flush(c);
    }
    send_hold_wait(c);
}

/* The request is no longer waiting for a human (decided, or gone). */
static void held_done(chat_t *c)
{
    if (!c->held_counted) return;
    c->held_counted = 0;
    edge_metrics_held_add(-1);
}

/* A policy held the model's answer (a tool call, or its text): ask a human.
 * The stream (if any) stays open with keep-alives; events are kept. 0 / -1. */
static int open_answer_hold(chat_t *c)
{
    const char *args = NULL;
    size_t args_len = 0;
    const char *tool = c->pstream ? lk_policy_stream_held_call(c->pstream, &args, &args_len) : NULL;
    json_t *whole = NULL; /* a whole answer: its first tool call, for the approvers */
    if (!c->pstream && (whole = json_loadb((const char *)c->resp.data, c->resp.len, 0, NULL))) {
        json_t *call = json_array_get(
            json_object_get(json_object_get(json_array_get(json_object_get(whole, "choices"), 0), "message"),
                            "tool_calls"),
            0);
        json_t *fn = json_object_get(call, "function");
        if (fn) {
            tool = json_string_value(json_object_get(fn, "name"));
            args = json_string_value(json_object_get(fn, "arguments"));
        } else { /* Anthropic: the first tool_use block */
            size_t i;
            json_t *blk;
            json_array_foreach(json_object_get(whole, "content"), i,
                               blk) if (!tool && json_is_string(json_object_get(blk, "name"))) tool =
                json_string_value(json_object_get(blk, "name"));
        }
        args_len = args ? strlen(args) : 0;
    }
    const lk_policy_result_t *r = c->pstream ? lk_policy_stream_result(c->pstream) : NULL;
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_HOLD;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.hold.tenant = lk_str(c->tenant);
    m.u.hold.key_id = lk_str(c->key_id);
    /* an approval covers exactly this answer: the request, the tool and its arguments */
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof m.u.hold.digest);
    crypto_generichash_update(&st, (const uint8_t *)c->fwd_body.base, c->fwd_body.len);
    if (tool) crypto_generichash_update(&st, (const uint8_t *)tool, strlen(tool) + 1);
    if (args_len) crypto_generichash_update(&st, (const uint8_t *)args, args_len);
    if (!tool) crypto_generichash_update(&st, c->resp.data ? c->resp.data : (const uint8_t *)"", c->resp.len);
    crypto_generichash_final(&st, m.u.hold.digest, sizeof m.u.hold.digest);
    m.u.hold.policy_id = lk_str(c->policy_id);
    m.u.hold.policy_version = c->policy_version;
    m.u.hold.rule_id = lk_str(r && r->rule_id[0] ? r->rule_id : c->rule_id);
    m.u.hold.reason = lk_str(r && r->message[0] ? r->message : "The model's answer needs a human decision.");
    m.u.hold.timeout_ms = (int64_t)g_edge->cfg.hold_timeout_ms;
    m.u.hold.kind = LK_STR_LIT("answer");
    m.u.hold.user = lk_str(c->user);
    m.u.hold.agent = lk_str(c->key_agent[0] ? c->key_agent : c->agent);
    m.u.hold.model = lk_str(c->model);
    m.u.hold.tool = lk_str(tool);
    m.u.hold.excerpt = (lk_str_t){args, args_len > 300 ? 300 : args_len};
    if (r && r->rule_id[0]) c->rule_id = pool_str(c, lk_str(r->rule_id));
    c->answer_hold = 1;
    c->hold_id[0] = '\0';
    c->hold_polls = 0;
    c->decision = "hold";
    c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_APPROVAL, &m, on_hold, c);
    json_decref(whole); /* the message was copied when sent */
    if (!c->call) {
        lk_log(LK_LOG_ERROR, c->rid, "approval unreachable: the held answer is withheld");
        return -1;
    }
    lk_log(LK_LOG_INFO, c->rid, "the answer is held for approval");
    return 0;
}

static void up_on_done(void *data, const char *err, int before_head);

/* A human decided on a held answer. */
static void answer_hold_decided(chat_t *c, lk_hold_outcome_t outcome, const char *reason)
{
    int approved = outcome == LK_HOLD_APPROVED || outcome == LK_HOLD_NO_HOLD;
    c->answer_hold = 0;
    if (h2o_timeout_is_linked(&c->hold_timer)) h2o_timeout_unlink(&c->hold_timer);
    c->decision = approved ? "approved" : outcome == LK_HOLD_TIMED_OUT ? "timed_out" : "rejected";
    if (!c->streaming) { /* a whole answer */
        if (approved) {
            c->http_status = c->upstream_status;
            audit_close(c, "request.completed");
            edge_http_send_json(c->req, c->upstream_status, c->rid, (const char *)c->resp.data, c->resp.len);
        } else {
            char msg[400];
            snprintf(msg, sizeof msg, "%s%s%s",
                     outcome == LK_HOLD_TIMED_OUT
                         ? "The model's answer was held for approval and nobody approved it "
                           "in time"
                         : "A reviewer rejected the model's answer",
                     reason[0] ? ": " : ".", reason);
            fail_after_accept(c, 403, outcome == LK_HOLD_TIMED_OUT ? "approval_timed_out" : "answer_rejected",
                              msg);
        }
        return;
    }
    if (!approved) {
        lk_policy_stream_resume(c->pstream, 0,
                                outcome == LK_HOLD_TIMED_OUT ? "nobody approved it in time" : reason);
        c->error_code = outcome == LK_HOLD_TIMED_OUT ? "approval_timed_out" : "answer_rejected";
        c->policy_blocked = 1;
        lk_buf_free(&c->held_q);
        if (c->up) {
            edge_upstream_cancel(c->up);
            c->up = NULL;
        }
        c->upstream_done = 1;
        chat_flush(c);
        return;
    }
    lk_policy_stream_resume(c->pstream, 1, NULL);
    /* replay what arrived meanwhile, the event that held first; a new hold keeps the rest again */
    lk_buf_t q = c->held_q;
    lk_buf_init(&c->held_q, 0);
    for (size_t off = 0; off + 8 <= q.len && !c->policy_blocked;) {
        uint32_t el, dl;
        memcpy(&el, q.data + off, 4);
        const char *ev = (const char *)q.data + off + 4;
        memcpy(&dl, q.data + off + 4 + el, 4);
        const char *d = (const char *)q.data + off + 8 + el;
        off += 8 + el + dl;
        if (policy_feed(c, el ? ev : NULL, el, d, dl) != 0 && !c->answer_hold) {
            if (!c->policy_blocked)
                stream_error(c, "upstream_malformed_stream", c->sse.error ? c->sse.error : "?");
            c->upstream_done = 1;
            if (c->up) {
                edge_upstream_cancel(c->up);
                c->up = NULL;
            }
            break;
        }
    }
    lk_buf_free(&q);
    if (!c->answer_hold && c->up_ended && !c->upstream_done) {
        up_on_done(c, c->up_err, 0);
        return;
    }
    chat_flush(c);
}

/* HOLD_REP (opened or joined) and HOLD_WAIT_REP (polled) alike. */
static void on_hold(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call = NULL;
    if (!reply || (reply->env.type != LK_MSG_HOLD_REP && reply->env.type != LK_MSG_HOLD_WAIT_REP)) {
        /* a poll that failed (approval restarting) is tried again until the hold's deadline */
        if (c->hold_id[0] && lk_now_ms() < c->hold_exp_ms + 2000 &&
            (!reply || reply->u.error.status == LK_ST_UNAVAILABLE)) {
            h2o_timeout_link(g_edge->loop, &g_hold_poll, &c->hold_timer);
            return;
        }
        c->decision = "error";
        worker_failed(c, reply, "approval");
        return;
    }
    const lk_hold_rep_t *h = &reply->u.hold_rep;
    if (h->approver.len) lk_str_copy(c->approver, sizeof c->approver, h->approver);
    char reason[300];
    lk_str_copy(reason, sizeof reason, h->reason);
    if (h->outcome != LK_HOLD_PENDING) held_done(c);
    if (c->answer_hold && h->outcome != LK_HOLD_PENDING) {
        answer_hold_decided(c, h->outcome, reason);
        return;
    }
    switch (h->outcome) {
    case LK_HOLD_NO_HOLD:
        c->decision = "hold"; /* nothing held after all (the approval service has no queue for it) */
        start_accept(c);
        return;
    case LK_HOLD_APPROVED:
        c->decision = "approved";
        start_accept(c);
        return;
    case LK_HOLD_REJECTED: {
        c->decision = "rejected";
        char msg[400];
        snprintf(msg, sizeof msg, "A reviewer rejected this request%s%s", reason[0] ? ": " : ".", reason);
        deny(c, 403, "request_rejected", pool_str(c, lk_str(msg)));
        return;
    }
    case LK_HOLD_TIMED_OUT:
        c->decision = "timed_out";
        deny(c, 403, "approval_timed_out",
             "This request was held for approval and nobody approved it in time.");
        return;
    case LK_HOLD_PENDING:
        if (!c->hold_id[0]) { /* just opened (or joined): remember it, and keep the agent's stream alive */
            lk_str_copy(c->hold_id, sizeof c->hold_id, h->hold_id);
            if (!c->held_counted) {
                c->held_counted = 1;
                edge_metrics_held_add(1);
            }
            c->hold_exp_ms =
                h->expires_ms ? h->expires_ms : lk_now_ms() + (int64_t)g_edge->cfg.hold_timeout_ms;
            lk_log(LK_LOG_INFO, c->rid, "held for approval as %s", c->hold_id);
            c->hold_timer.cb = on_hold_timer;
            if (c->stream && c->api->streams && !c->answer_hold) start_held_stream(c);
        }
        if (!g_hold_poll_ready) {
            h2o_timeout_init(g_edge->loop, &g_hold_poll, HOLD_POLL_MS);
            g_hold_poll_ready = 1;
        }
        h2o_timeout_link(g_edge->loop, &g_hold_poll, &c->hold_timer);
        return;
    }
    deny(c, 500, "internal_error", "Unexpected answer from the approval service.");
}

static void on_decide(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call = NULL;
    if (!reply || reply->env.type != LK_MSG_DECIDE_REP) {
        worker_failed(c, reply, "policy");
        return;
    }
    const lk_decide_rep_t *d = &reply->u.decide_rep;
    c->tenant = pool_str(c, d->tenant);
    c->key_id = pool_str(c, d->key_id);
    c->user = pool_str(c, d->user);
    c->provider_id = pool_str(c, d->provider_id);
    c->provider_kind = pool_str(c, d->provider_kind);
    c->base_url = pool_str(c, d->base_url);
    c->cred_id = pool_str(c, d->cred_id);
    c->upstream_model = pool_str(c, d->upstream_model);
    if (!c->upstream_model) c->upstream_model = c->model;
    c->up_url = c->base_url;
    c->up_umodel = c->upstream_model;
    c->provider_id2 = pool_str(c, d->provider_id2);
    c->provider_kind2 = pool_str(c, d->provider_kind2);
    c->base_url2 = pool_str(c, d->base_url2);
    c->cred_id2 = pool_str(c, d->cred_id2);
    c->upstream_model2 = pool_str(c, d->upstream_model2);
    c->policy_id = pool_str(c, d->policy_id);
    c->rule_id = pool_str(c, d->rule_id);
    c->policy_version = d->policy_version;
    c->answer_rules = d->answer_rules;
    c->price_in = d->priced ? d->price_in : -1;
    c->price_out = d->priced ? d->price_out : -1;
    c->reserved = d->reserved;
    c->anomaly = pool_str(c, d->anomaly);
    c->hdp = pool_str(c, d->hdp);
    lk_str_copy(c->key_agent, sizeof c->key_agent, d->agent);
    lk_str_copy(c->team, sizeof c->team, d->team);
    c->kind = edge_api_kind(c->provider_kind);
    char msg[512];
    lk_str_copy(msg, sizeof msg, d->message);
    char code[64];
    lk_str_copy(code, sizeof code, d->error_code);
    if (d->status != LK_ST_OK) {
        int st = edge_http_status_of(d->status);
        if (st == 401) edge_keycache_drop(g_edge->keycache, c->key_tag);
        deny(c, st, code[0] ? pool_str(c, d->error_code) : NULL,
             msg[0] ? msg : (st == 401 ? "Incorrect API key provided." : "The request was refused."));
        return;
    }
    if (c->api->local) { /* GET /v1/models: the key's models, from policy */
        char *body = edge_api_models_body(c->req, d->models.ptr ? d->models.ptr : "[]",
                                          d->models.ptr ? d->models.len : 2);
        if (!body) {
            deny(c, 500, "internal_error", "The model list could not be built.");
            return;
        }
        c->decision = "allow";
        c->http_status = 200;
        audit_close(c, "request.completed");
        edge_http_send_json(c->req, 200, c->rid, body, strlen(body));
        free(body);
        return;
    }
    if (d->decision != LK_DECISION_BLOCK && c->answer_rules && c->stream &&
        !strcmp(c->api->endpoint, "responses")) {
        /* the answer filter cannot read Responses streams yet: fail closed rather than pass an answer unread
         */
        deny(c, 400, "policy_stream_unsupported",
             "This key's policy inspects answers, and streamed Responses answers cannot be inspected yet. "
             "Send the request without \"stream\": true.");
        return;
    }
    if (d->decision != LK_DECISION_BLOCK && !edge_api_kind_serves(c->api, c->kind)) {
        /* no translation between dialects: refuse in the client's shape */
        char why[600];
        snprintf(why, sizeof why,
                 "The model `%s` is served by a provider of kind `%s`, which does not offer the %s API.",
                 c->model, c->provider_kind ? c->provider_kind : "?", c->api->endpoint);
        deny(c, 400, "provider_api_mismatch", pool_str(c, lk_str(why)));
        return;
    }
    switch (d->decision) {
    case LK_DECISION_BLOCK:
        c->decision = "block";
        deny(c, 403, code[0] ? pool_str(c, d->error_code) : "policy_block",
             msg[0] ? msg : "This request was blocked by a Lumkey policy.");
        return;
    case LK_DECISION_HOLD: {
        c->decision = "hold";
        lk_msg_t m = {0};
        m.env.type = LK_MSG_HOLD;
        m.env.rid = lk_str(c->rid);
        m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
        m.u.hold.tenant = lk_str(c->tenant);
        m.u.hold.key_id = lk_str(c->key_id);
        crypto_generichash(m.u.hold.digest, sizeof m.u.hold.digest, (const uint8_t *)c->fwd_body.base,
                           c->fwd_body.len, NULL, 0);
        m.u.hold.policy_id = lk_str(c->policy_id);
        m.u.hold.policy_version = c->policy_version;
        m.u.hold.rule_id = lk_str(c->rule_id);
        m.u.hold.reason = d->message;
        m.u.hold.timeout_ms = (int64_t)g_edge->cfg.hold_timeout_ms;
        m.u.hold.kind = LK_STR_LIT("request");
        m.u.hold.user = lk_str(c->user);
        m.u.hold.agent = lk_str(c->key_agent[0] ? c->key_agent : c->agent);
        m.u.hold.model = lk_str(c->model);
        /* a held request waits longer than one hop: the first answer comes at once, then HOLD_WAIT polls */
        c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_APPROVAL, &m, on_hold, c);
        if (!c->call) unavailable(c, "approval");
        return;
    }
    case LK_DECISION_LOG:
        c->decision = "log";
        start_accept(c);
        return;
    case LK_DECISION_REDACT:
        if (d->body.len == 0) break; /* a redaction without a body: refuse below */
        c->decision = "redact";
        c->fwd_body = h2o_strdup(&c->req->pool, d->body.ptr, d->body.len);
        start_accept(c);
        return;
    case LK_DECISION_ALLOW:
        c->decision = "allow";
        start_accept(c);
        return;
    }
    deny(c, 500, "internal_error", "Unexpected decision from the policy service.");
}

static void send_decide(chat_t *c);

static void on_key_hash(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call = NULL;
    if (!reply || reply->env.type != LK_MSG_KEY_HASH_REP) {
        worker_failed(c, reply, "vault");
        return;
    }
    memcpy(c->key_hash, reply->u.key_hash_rep.hash, sizeof c->key_hash);
    edge_keycache_put(g_edge->keycache, c->key_tag, c->key_hash, lk_now_ms());
    send_decide(c);
}

/* The request headers policies may read, as "name: value\n" lines (h2o keeps
 * names lower-case): never credentials or cookies, at most 64 KiB. */
static lk_str_t policy_headers(chat_t *c)
{
    static const char *const SKIP[] = {
        "authorization",  "x-api-key",         "api-key",    "cookie", "proxy-authorization",
        "content-length", "transfer-encoding", "connection", NULL};
    enum { CAP = 65536 }; /* room for an HDP-Token (docs/hdp.md); sized to what is sent */
    const h2o_headers_t *hs = &c->req->headers;
    unsigned char keep[256] = {0};
    size_t need = 0;
    for (size_t i = 0; i < hs->size && i < sizeof keep; i++) {
        const h2o_header_t *h = &hs->entries[i];
        int skip = 0;
        for (const char *const *k = SKIP; *k && !skip; k++)
            skip = h2o_memis(h->name->base, h->name->len, *k, strlen(*k));
        if (skip || memchr(h->value.base, '\n', h->value.len) || need + h->name->len + h->value.len + 3 > CAP)
            continue;
        keep[i] = 1;
        need += h->name->len + h->value.len + 3;
    }
    if (need == 0) return (lk_str_t){NULL, 0};
    char *buf = h2o_mem_alloc_pool(&c->req->pool, need);
    size_t n = 0;
    for (size_t i = 0; i < hs->size && i < sizeof keep; i++) {
        if (!keep[i]) continue;
        const h2o_header_t *h = &hs->entries[i];
        memcpy(buf + n, h->name->base, h->name->len);
        n += h->name->len;
        memcpy(buf + n, ": ", 2);
        n += 2;
        memcpy(buf + n, h->value.base, h->value.len);
        n += h->value.len;
        buf[n++] = '\n';
    }
    return (lk_str_t){buf, n};
}

static void send_decide(chat_t *c)
{
    lk_msg_t m = {0};
    m.env.type = LK_MSG_DECIDE;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    memcpy(m.u.decide.key_hash, c->key_hash, sizeof c->key_hash);
    m.u.decide.key_id = lk_str(c->key_pub_id);
    m.u.decide.endpoint = lk_str(c->api->endpoint);
    m.u.decide.model = lk_str(c->model);
    m.u.decide.stream = c->stream;
    m.u.decide.source_ip = lk_str(c->source_ip);
    m.u.decide.body = (lk_str_t){c->req->entity.base, c->req->entity.len};
    m.u.decide.headers = policy_headers(c);
    c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_POLICY, &m, on_decide, c);
    if (!c->call) unavailable(c, "policy");
}

/* ------------------------------------------------------------- request -- */

static void on_settled(void *data, const lk_msg_t *reply)
{
    (void)data;
    if (!reply || reply->env.type != LK_MSG_SETTLE_REP)
        lk_log(LK_LOG_WARN, NULL, "a budget reservation was not settled (it keeps its reserved maximum)");
}

/* The request ended: its budget reservation is settled to the real usage (fire and forget). */
static void settle(chat_t *c)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_SETTLE;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.settle.tenant = lk_str(c->tenant);
    int known = c->prompt_tokens >= 0 && c->completion_tokens >= 0 && c->upstream_status;
    m.u.settle.prompt_tokens = known ? c->prompt_tokens : (c->upstream_status ? -1 : 0);
    m.u.settle.completion_tokens = known ? c->completion_tokens : (c->upstream_status ? -1 : 0);
    if (!edge_rpc_call(g_edge->rpc, EDGE_SVC_POLICY, &m, on_settled, NULL))
        lk_log(LK_LOG_WARN, c->rid, "policy unreachable: the budget reservation keeps its reserved maximum");
}

static void on_dispose(void *p)
{
    chat_t *c = p;
    edge_metrics_request(c->api->endpoint, c->decision, c->http_status ? c->http_status : 499,
                         (double)(lk_mono_us() - c->t0_us) / 1e6);
    edge_rpc_cancel(g_edge->rpc, c->call);
    edge_rpc_cancel(g_edge->rpc, c->call2);
    edge_policy_abandon(c->pol_wait);
    if (h2o_timeout_is_linked(&c->hold_timer)) h2o_timeout_unlink(&c->hold_timer);
    held_done(c);
    if (c->up) {
        edge_upstream_cancel(c->up);
        c->up = NULL;
        if (!c->error_code) c->error_code = "client_closed";
    }
    if (!c->audited && c->accept_done) {
        c->http_status = c->http_status ? c->http_status : 499;
        audit_close(c, "request.completed");
    }
    if (c->reserved) settle(c);
    if (c->pstream) {
        const lk_policy_result_t *r = lk_policy_stream_result(c->pstream);
        if (r->redactions)
            lk_log(LK_LOG_INFO, c->rid, "%d spans redacted in the streamed answer", r->redactions);
    }
    lk_policy_stream_free(&c->pstream);
    edge_policy_release(&c->pol);
    EVP_MD_CTX_free(c->ans_sha);
    c->ans_sha = NULL;
    lk_buf_free(&c->cred_head);
    lk_buf_free(&c->held_q);
    lk_buf_free(&c->resp);
    lk_buf_free(&c->pending);
    lk_buf_free(&c->inflight);
    if (c->streaming) lk_sse_free(&c->sse);
}

/* Reads model / stream from the body. 0, or -1 after answering 400. */
static int parse_view(chat_t *c)
{
    json_error_t jerr;
    json_t *root = json_loadb(c->req->entity.base, c->req->entity.len, 0, &jerr);
    if (!root) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "We could not parse the JSON body of your request (%s at line %d, column %d). "
                 "The API expects a JSON payload.",
                 jerr.text, jerr.line, jerr.column);
        deny(c, 400, "invalid_json", msg);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        deny(c, 400, "invalid_json", "The request body must be a JSON object.");
        goto done;
    }
    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        deny(c, 400, "missing_model", "You must provide a model parameter.");
        goto done;
    }
    if (json_string_length(model) >= sizeof c->model) {
        deny(c, 400, "invalid_model", "The model name is too long.");
        goto done;
    }
    snprintf(c->model, sizeof c->model, "%s", json_string_value(model));
    json_t *stream = json_object_get(root, "stream");
    if (stream && !json_is_boolean(stream) && !json_is_null(stream)) {
        deny(c, 400, "invalid_type", "'stream' must be a boolean.");
        goto done;
    }
    c->stream = c->api->streams && json_is_true(stream);
    json_t *so = json_object_get(root, "stream_options");
    c->include_usage = json_is_object(so) && json_is_true(json_object_get(so, "include_usage"));
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* The client's W3C traceparent if well formed, else a new one (version 00,
 * random trace and parent ids, sampled): always propagated upstream, and its
 * trace id is what audit records. */
static void read_traceparent(chat_t *c)
{
    h2o_iovec_t tp = edge_http_header(c->req, "traceparent", NULL);
    /* version-traceid-parentid-flags: 00-<32 hex>-<16 hex>-<2 hex> */
    int ok = tp.len == 55 && tp.base[2] == '-' && tp.base[35] == '-' && tp.base[52] == '-';
    for (size_t i = 0; ok && i < 55; i++) {
        char ch = tp.base[i];
        if (i == 2 || i == 35 || i == 52) continue;
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) ok = 0;
    }
    if (ok && (memcmp(tp.base + 3, "00000000000000000000000000000000", 32) == 0 ||
               memcmp(tp.base + 36, "0000000000000000", 16) == 0))
        ok = 0;
    if (ok) {
        memcpy(c->traceparent, tp.base, 55);
    } else {
        uint8_t r[24];
        char hex[49];
        randombytes_buf(r, sizeof r);
        sodium_bin2hex(hex, sizeof hex, r, sizeof r);
        snprintf(c->traceparent, sizeof c->traceparent, "00-%.32s-%.16s-01", hex, hex + 32);
    }
    c->traceparent[55] = '\0';
    memcpy(c->trace_id, c->traceparent + 3, 32);
    c->trace_id[32] = '\0';
}

int edge_chat_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    const edge_api_t *api = edge_api_find(req->path_normalized);
    if (!api) return edge_notfound_on_req(handler, req);
    chat_t *c = h2o_mem_alloc_shared(&req->pool, sizeof *c, on_dispose);
    memset(c, 0, sizeof *c);
    c->req = req;
    c->api = api;
    c->fwd_body = req->entity;
    c->t0_us = lk_mono_us();
    c->prompt_tokens = c->completion_tokens = c->total_tokens = -1;
    lk_buf_init(&c->cred_head, 1);
    lk_buf_init(&c->resp, 0);
    lk_buf_init(&c->pending, 0);
    lk_buf_init(&c->inflight, 0);
    lk_rid_new(c->rid);
    edge_http_peer(req, c->source_ip, sizeof c->source_ip);
    read_traceparent(c);
    h2o_iovec_t ua = edge_http_header(req, "user-agent", NULL);
    for (size_t i = 0; ua.base && i < ua.len && i + 1 < sizeof c->agent; i++)
        c->agent[i] = ua.base[i] >= 0x20 && ua.base[i] < 0x7f ? ua.base[i] : '?';
    g_edge->stats.requests++;

    if (g_edge->stopping) {
        unavailable(c, "edge (shutting down)");
        return 0;
    }
    const char *framing = edge_http_framing_error(req);
    if (framing) {
        char msg[160];
        snprintf(msg, sizeof msg, "Malformed request framing: %s.", framing);
        deny(c, 400, "malformed_request", msg);
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, api->local ? "GET" : "POST", api->local ? 3 : 4)) {
        deny(c, 405, "method_not_allowed",
             api->local ? "Only GET is supported on this endpoint."
                        : "Only POST is supported on this endpoint.");
        return 0;
    }
    if (!api->local && (req->entity.base == NULL || req->entity.len == 0)) {
        deny(c, 400, "missing_body", "The request body is empty; a JSON payload is expected.");
        return 0;
    }
    if (req->entity.len > g_edge->cfg.max_body_bytes) {
        char msg[160];
        snprintf(msg, sizeof msg, "The request body is larger than the %zu bytes this gateway accepts.",
                 g_edge->cfg.max_body_bytes);
        deny(c, 413, "request_too_large", msg);
        return 0;
    }
    h2o_iovec_t key = edge_http_bearer(req);
    if (key.base == NULL) {
        deny(c, 401, "missing_api_key",
             api->shape == EDGE_SHAPE_ANTHROPIC
                 ? "x-api-key header is required (or Authorization: Bearer YOUR_KEY)."
                 : "You didn't provide an API key. You need to provide your API key in an Authorization "
                   "header "
                   "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
        return 0;
    }
    lk_key_info_t info;
    lk_key_err_t kerr = lk_key_parse(key.base, key.len, &info);
    if (kerr != LK_KEY_OK || info.kind == LK_KEY_ADMIN) {
        char msg[200];
        snprintf(msg, sizeof msg, "Incorrect API key provided: %s.",
                 kerr != LK_KEY_OK ? lk_key_strerror(kerr) : "admin tokens cannot call model APIs");
        deny(c, 401, "invalid_api_key", msg);
        return 0;
    }
    lk_key_public_id(&info, c->key_pub_id, sizeof c->key_pub_id);
    if (!api->local && parse_view(c) != 0) return 0;

    edge_keycache_tag(g_edge->keycache, key.base, key.len, c->key_tag);
    if (edge_keycache_get(g_edge->keycache, c->key_tag, lk_now_ms(), c->key_hash)) {
        g_edge->stats.keycache_hits++;
        send_decide(c);
        return 0;
    }
    lk_msg_t m = {0};
    m.env.type = LK_MSG_KEY_HASH;
    m.env.rid = lk_str(c->rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.key_hash.key = (lk_str_t){key.base, key.len};
    c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_VAULT, &m, on_key_hash, c);
    if (!c->call) unavailable(c, "vault");
    return 0;
}
