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
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "edge.h"
#include "edge_api.h"
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
} chat_t;

/* ---------------------------------------------------------------- audit -- */

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
    /* fallback (issue 7): set only when the second route was used */
    a->provider_id2 = lk_str(c->fallback_used ? c->provider_id2 : NULL);
    a->upstream_model2 = lk_str(c->fallback_used ? c->upstream_model2 : NULL);
}

static void on_closing_audit(void *data, const lk_msg_t *reply)
{
    (void)data;
    if (!reply || reply->env.type != LK_MSG_AUDIT_REP)
        lk_log(LK_LOG_ERROR, NULL, "audit did not confirm a closing event");
}

/* The last event of a request: "request.completed" or "request.denied". Sent
 * once; fire and forget (the accept event, which gates forwarding, is awaited). */
static void audit_close(chat_t *c, const char *kind)
{
    if (c->audited) return;
    c->audited = 1;
    char event_id[LK_UUID_LEN + 1];
    lk_msg_t m;
    fill_audit(c, &m, kind, event_id);
    if (!edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_closing_audit, NULL))
        lk_log(LK_LOG_ERROR, c->rid, "audit unreachable: %s event not recorded", kind);
}

/* ------------------------------------------------------------- answers -- */

/* An error answer in the client's API shape. */
static void send_err(chat_t *c, int status, const char *rid, const char *type, const char *code,
                     const char *message)
{
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

/* THE relay point: every SSE event of every API passes here once, as
 * (event name, data), in order. An answer-side stream filter plugs in here
 * (it may rewrite, drop or add events; it must keep the API's shape).
 * TODO(policy filter): call the policy library's stream filter, then write
 * what it emits. */
static int relay_event(chat_t *c, const char *event, size_t event_len, const char *data, size_t data_len)
{
    return edge_api_sse_write(&c->pending, event, event_len, data, data_len);
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
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/event-stream"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
        edge_http_add_common_headers(req, 200, c->rid);
        add_anthropic_request_id(c);
        c->gen.proceed = on_proceed;
        c->gen.stop = on_stop;
        h2o_start_response(req, &c->gen);
    }
    return 0;
}

static int up_on_body(void *data, const char *bytes, size_t len)
{
    chat_t *c = data;
    if (c->streaming) {
        if (lk_sse_feed(&c->sse, bytes, len, on_sse_event, c) != 0) {
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
    json_decref(root);
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
    if (c->accept_done && c->cred_done) forward(c);
}

/* ----------------------------------------------------- worker replies -- */

static void on_accept(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call = NULL;
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
    c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_AUDIT, &m, on_accept, c);
    if (!c->call) {
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
    }
}

static void on_hold(void *data, const lk_msg_t *reply)
{
    chat_t *c = data;
    c->call = NULL;
    if (!reply || reply->env.type != LK_MSG_HOLD_REP) {
        worker_failed(c, reply, "approval");
        return;
    }
    switch (reply->u.hold_rep.outcome) {
    case LK_HOLD_NO_HOLD:
    case LK_HOLD_APPROVED:
        start_accept(c);
        return;
    case LK_HOLD_REJECTED:
        c->decision = "rejected";
        deny(c, 403, "request_rejected", "A reviewer rejected this request.");
        return;
    case LK_HOLD_TIMED_OUT:
        c->decision = "timed_out";
        deny(c, 403, "approval_timed_out",
             "This request was held for approval and nobody approved it in time.");
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
    c->kind = edge_api_kind(c->provider_kind);
    /* TODO(policy library): when DECIDE_REP carries a rewritten body (redaction),
     * point c->fwd_body at a pool copy of it here; the HOLD digest below and
     * the upstream call both use c->fwd_body. */
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
        c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_APPROVAL, &m, on_hold, c);
        if (!c->call) unavailable(c, "approval");
        return;
    }
    case LK_DECISION_LOG:
        c->decision = "log";
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
    c->call = edge_rpc_call(g_edge->rpc, EDGE_SVC_POLICY, &m, on_decide, c);
    if (!c->call) unavailable(c, "policy");
}

/* ------------------------------------------------------------- request -- */

static void on_dispose(void *p)
{
    chat_t *c = p;
    edge_metrics_request(c->api->endpoint, c->decision, c->http_status ? c->http_status : 499,
                         (double)(lk_mono_us() - c->t0_us) / 1e6);
    edge_rpc_cancel(g_edge->rpc, c->call);
    edge_rpc_cancel(g_edge->rpc, c->call2);
    if (c->up) {
        edge_upstream_cancel(c->up);
        c->up = NULL;
        if (!c->error_code) c->error_code = "client_closed";
    }
    if (!c->audited && c->accept_done) {
        c->http_status = c->http_status ? c->http_status : 499;
        audit_close(c, "request.completed");
    }
    lk_buf_free(&c->cred_head);
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
