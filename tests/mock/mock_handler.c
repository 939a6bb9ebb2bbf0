/*  mock_handler - how lumkey-mock answers a request (see lumkey-mock.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <h2o.h>
#include <jansson.h>

#include "mock_anthropic.h"
#include "mock_directive.h"
#include "mock_openai.h"
#include "mock_record.h"
#include "mock_sb.h"
#include "mock_server.h"

static atomic_uint_fast64_t mock_total_requests;

static mock_thread_t *thread_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(mock_thread_t, ctx, req->conn->ctx);
}

h2o_timeout_t *mock_timer_for(mock_thread_t *thr, uint32_t ms)
{
    for (size_t i = 0; i < thr->ntimers; i++)
        if (thr->timers[i].ms == ms) return &thr->timers[i].timeout;
    if (thr->ntimers == MOCK_MAX_TIMERS) return NULL;
    thr->timers[thr->ntimers].ms = ms;
    h2o_timeout_init(thr->ctx.loop, &thr->timers[thr->ntimers].timeout, ms);
    return &thr->timers[thr->ntimers++].timeout;
}

/* ---------------------------------------- jansson in the request pool */

/* jansson's allocator is process-wide; while a request is being parsed its
 * pool is set here, so the parse tree lives (and dies) with the request. */
static __thread h2o_mem_pool_t *json_pool;

static void *json_alloc(size_t n)
{
    h2o_mem_pool_t *pool = json_pool;
    unsigned char *p = pool ? h2o_mem_alloc_pool(pool, n + 16) : malloc(n + 16);
    if (p == NULL) return NULL;
    p[0] = pool != NULL;
    return p + 16;
}

static void json_release(void *ptr)
{
    if (ptr == NULL) return;
    unsigned char *p = (unsigned char *)ptr - 16;
    if (!p[0]) free(p);
}

void mock_handler_init(void)
{
    json_set_alloc_funcs(json_alloc, json_release);
    json_object_seed(0); /* before the threads: the seed is process-wide */
}

/* Parses the request body; the tree is owned by req->pool (never decref'd). */
static json_t *parse_body(h2o_req_t *req)
{
    if (req->entity.base == NULL) return NULL;
    json_error_t err;
    json_pool = &req->pool;
    json_t *root = json_loadb(req->entity.base, req->entity.len, 0, &err);
    json_pool = NULL;
    return root;
}

/* ------------------------------------------------------------ responses */

typedef enum { PHASE_WAIT, PHASE_STREAM, PHASE_HANG } phase_t;

/* A response that is not sent at once: delayed, streamed, or never. Lives in
 * the request pool; h2o calls stop if the client goes away first. */
typedef struct {
    h2o_generator_t super;
    h2o_req_t *req;
    mock_thread_t *thr;
    h2o_timeout_entry_t timer;
    h2o_timeout_t *latency;
    h2o_timeout_t *interval; /* NULL: no pause between stream events */
    phase_t phase;
    int stream;
    h2o_iovec_t body; /* non-stream: the whole body */
    mock_directive_t dir;
    mock_chat_t chat;
    int include_usage;
    int next; /* next stream event */
    mock_sb_t sb;
    h2o_iovec_t typed; /* a pre-rendered typed stream (messages, responses): sent one event at a time */
    size_t typed_at;
    int typed_k;
} pending_t;

static void add_header(h2o_req_t *req, const h2o_token_t *token, const char *v, size_t n)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, v, n);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

static void set_json_headers(h2o_req_t *req, int status)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    add_header(req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/json"));
}

static void set_request_id(h2o_req_t *req, const char *id)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, id, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, v.base, v.len);
}

static void send_now(h2o_req_t *req, h2o_iovec_t body)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.content_length = body.len;
    h2o_start_response(req, &generator);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

/* Index of the stream event where close_after cuts the connection. */
static int cut_at(const pending_t *p)
{
    int nb = mock_chat_nevents(&p->chat);
    return p->dir.close_after < nb ? p->dir.close_after : nb;
}

/* The next event of a pre-rendered typed stream; close_after cuts it. */
static void typed_next(pending_t *p)
{
    h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
    h2o_iovec_t buf = h2o_iovec_init(NULL, 0);
    if (p->dir.close_after >= 0 && p->typed_k >= p->dir.close_after) {
        state = H2O_SEND_STATE_ERROR;
        p->req->http1_is_persistent = 0;
    } else {
        const char *from = p->typed.base + p->typed_at;
        const char *e = memmem(from, p->typed.len - p->typed_at, "\n\n", 2);
        size_t n = e ? (size_t)(e - from) + 2 : p->typed.len - p->typed_at;
        buf = h2o_iovec_init(from, n);
        p->typed_at += n;
        p->typed_k++;
        if (p->typed_at >= p->typed.len) state = H2O_SEND_STATE_FINAL;
    }
    h2o_send(p->req, &buf, buf.len ? 1 : 0, state);
}

static void stream_next(pending_t *p)
{
    if (p->typed.base) {
        typed_next(p);
        return;
    }
    mock_chat_t *c = &p->chat;
    int nb = mock_chat_nevents(c), k = p->next++;
    h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
    mock_sb_reset(&p->sb);
    if (p->dir.close_after >= 0) {
        if (k < cut_at(p))
            mock_chat_event(&p->sb, c, k);
        else
            state = H2O_SEND_STATE_ERROR; /* cut: no finish chunk, no [DONE]; HTTP/2 resets the stream */
    } else if (p->dir.malformed_sse) {
        if (k == 0)
            mock_chat_event(&p->sb, c, 0);
        else if (k == 1)
            MOCK_SB_LIT(
                &p->sb,
                "data: {\"id\":\"chatcmpl-broken\",\"choices\":[{\"delta\":{\"content\":\"unterminated\n\n");
        else if (k == 2)
            MOCK_SB_LIT(&p->sb, "this line is not an sse field\n\n");
        else {
            MOCK_SB_LIT(&p->sb, MOCK_SSE_DONE);
            state = H2O_SEND_STATE_FINAL;
        }
    } else if (k < nb) {
        mock_chat_event(&p->sb, c, k);
    } else if (k == nb) {
        mock_chat_final(&p->sb, c);
    } else if (k == nb + 1 && p->include_usage) {
        mock_chat_usage(&p->sb, c);
    } else {
        MOCK_SB_LIT(&p->sb, MOCK_SSE_DONE);
        state = H2O_SEND_STATE_FINAL;
    }
    h2o_iovec_t buf = h2o_iovec_init(p->sb.base, p->sb.len);
    if (state == H2O_SEND_STATE_ERROR) p->req->http1_is_persistent = 0;
    h2o_send(p->req, &buf, buf.len ? 1 : 0, state); /* p may be gone when state is not IN_PROGRESS */
}

/* The response may go out now: headers were set before h2o_start_response. */
static void begin(pending_t *p)
{
    if (p->stream) {
        p->phase = PHASE_STREAM;
        stream_next(p);
    } else {
        h2o_send(p->req, &p->body, 1, H2O_SEND_STATE_FINAL);
    }
}

/* Whether the peer of an HTTP/1 request has hung up (h2o stops reading while
 * a request is processed, so it would not notice by itself). */
static int peer_gone(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return 0; /* HTTP/2: h2o keeps reading and resets the stream itself */
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL) return 0;
    char c;
    ssize_t r = recv(h2o_socket_get_fd(sock), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void on_timer(h2o_timeout_entry_t *entry)
{
    pending_t *p = H2O_STRUCT_FROM_MEMBER(pending_t, timer, entry);
    switch (p->phase) {
    case PHASE_WAIT:
        begin(p);
        break;
    case PHASE_STREAM:
        stream_next(p);
        break;
    case PHASE_HANG:
        if (peer_gone(p->req)) {
            p->req->http1_is_persistent = 0;
            h2o_send(p->req, NULL, 0, H2O_SEND_STATE_ERROR);
        } else {
            h2o_timeout_link(p->thr->ctx.loop, mock_timer_for(p->thr, MOCK_HANG_POLL_MS), &p->timer);
        }
        break;
    }
}

static void on_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    pending_t *p = (pending_t *)self;
    int cutting =
        p->dir.close_after >= 0 && (p->typed.base ? p->typed_k >= p->dir.close_after : p->next >= cut_at(p));
    if (p->interval && !cutting)
        h2o_timeout_link(p->thr->ctx.loop, p->interval, &p->timer);
    else
        stream_next(p);
}

static void on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    pending_t *p = (pending_t *)self;
    if (h2o_timeout_is_linked(&p->timer)) h2o_timeout_unlink(&p->timer);
}

static pending_t *pending_new(mock_thread_t *thr, h2o_req_t *req, const mock_directive_t *d)
{
    pending_t *p = h2o_mem_alloc_pool(&req->pool, sizeof(*p));
    memset(p, 0, sizeof(*p));
    p->super.proceed = on_proceed;
    p->super.stop = on_stop;
    p->req = req;
    p->thr = thr;
    p->timer.cb = on_timer;
    p->dir = *d;
    return p;
}

/* Headers are set; sends now, after the directive's latency, or never (hang). */
static void dispatch(pending_t *p)
{
    h2o_start_response(p->req, &p->super);
    if (p->dir.hang) {
        p->phase = PHASE_HANG;
        h2o_timeout_link(p->thr->ctx.loop, mock_timer_for(p->thr, MOCK_HANG_POLL_MS), &p->timer);
    } else if (p->latency) {
        p->phase = PHASE_WAIT;
        h2o_timeout_link(p->thr->ctx.loop, p->latency, &p->timer);
    } else {
        begin(p);
    }
}

static void send_error(h2o_req_t *req, int status, const char *message, const char *param)
{
    mock_sb_t sb;
    mock_sb_init(&sb, &req->pool, 256);
    mock_openai_error(&sb, status, message, param);
    set_json_headers(req, status);
    send_now(req, h2o_iovec_init(sb.base, sb.len));
}

/* Sends a complete body honouring latency_ms / hang. */
static void send_body(mock_thread_t *thr, h2o_req_t *req, const mock_directive_t *d, int status,
                      h2o_iovec_t body)
{
    set_json_headers(req, status);
    if (!d->hang && d->latency_ms == 0) {
        send_now(req, body);
        return;
    }
    pending_t *p = pending_new(thr, req, d);
    p->body = body;
    p->latency = d->latency_ms ? mock_timer_for(thr, (uint32_t)d->latency_ms) : NULL;
    req->res.content_length = body.len;
    dispatch(p);
}

/* Checks that the timeouts a directive asks for can be had. 0 / -1 (answered 400). */
static int check_timers(mock_thread_t *thr, h2o_req_t *req, const mock_directive_t *d)
{
    if ((d->latency_ms && mock_timer_for(thr, (uint32_t)d->latency_ms) == NULL) ||
        (d->interval_ms && mock_timer_for(thr, (uint32_t)d->interval_ms) == NULL) ||
        (d->hang && mock_timer_for(thr, MOCK_HANG_POLL_MS) == NULL)) {
        send_error(req, 400, "lumkey-mock: too many distinct latency/interval values on this thread", NULL);
        return -1;
    }
    return 0;
}

/* Sends the directive's simulated error, if it asks for one. 1 if answered. */
static int maybe_fail(mock_thread_t *thr, h2o_req_t *req, const mock_directive_t *d)
{
    if (d->status == 0 || d->status == 200) return 0;
    char msg[96];
    if (d->status == 429)
        snprintf(msg, sizeof(msg), "Rate limit reached for requests (simulated by lumkey-mock)");
    else
        snprintf(msg, sizeof(msg), "lumkey-mock: simulated HTTP %d error", d->status);
    mock_sb_t sb;
    mock_sb_init(&sb, &req->pool, 256);
    mock_openai_error(&sb, d->status, msg, NULL);
    send_body(thr, req, d, d->status, h2o_iovec_init(sb.base, sb.len));
    return 1;
}

/* --------------------------------------------------------------- routes */

static int text_of(json_t *content, h2o_mem_pool_t *pool, const char **s, size_t *n)
{
    if (json_is_string(content)) {
        *s = json_string_value(content);
        *n = json_string_length(content);
        return 0;
    }
    if (!json_is_array(content)) return -1;
    mock_sb_t sb;
    mock_sb_init(&sb, pool, 256);
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *text = json_object_get(part, "text");
        if (json_is_string(text)) mock_sb_add(&sb, json_string_value(text), json_string_length(text));
    }
    *s = sb.base;
    *n = sb.len;
    return 0;
}

static void handle_chat(mock_thread_t *thr, h2o_req_t *req, mock_directive_t *d, h2o_iovec_t xmock)
{
    char err[160];
    json_t *root = parse_body(req);
    if (!json_is_object(root)) {
        send_error(req, 400,
                   "We could not parse the JSON body of your request. (lumkey-mock expects a JSON object)",
                   NULL);
        return;
    }
    json_t *model = json_object_get(root, "model"), *messages = json_object_get(root, "messages");
    if (!json_is_string(model)) {
        send_error(req, 400, "you must provide a model parameter", "model");
        return;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        send_error(req, 400, "'messages' must be a non-empty array", "messages");
        return;
    }
    const char *last_user = NULL, *last_role = NULL;
    size_t last_user_len = 0, i;
    json_t *msg;
    json_array_foreach(messages, i, msg)
    {
        const char *text, *role = json_string_value(json_object_get(msg, "role"));
        size_t n;
        if (text_of(json_object_get(msg, "content"), &req->pool, &text, &n) == 0) {
            if (mock_directive_scan(d, text, n, err, sizeof(err)) != 0) {
                send_error(req, 400, err, "messages");
                return;
            }
            if (role && strcmp(role, "user") == 0) last_user = text, last_user_len = n;
        }
        last_role = role;
    }
    if (xmock.base && mock_directive_apply(d, xmock.base, xmock.len, err, sizeof(err)) != 0) {
        send_error(req, 400, err, NULL);
        return;
    }
    /* like a model: once the tool's result is in the conversation, answer in text */
    if (last_role && strcmp(last_role, "tool") == 0) d->tool = NULL;
    mock_directive_for_model(d, json_string_value(model), json_string_length(model));
    if (check_timers(thr, req, d) != 0 || maybe_fail(thr, req, d)) return;

    mock_chat_t chat, *c = &chat;
    uint64_t uid = ((uint64_t)mock_cfg.boot << 48) ^ ((uint64_t)thr->index << 40) ^ ++thr->served;
    mock_chat_init(c, &req->pool, uid, h2o_now(thr->ctx.loop) / 1000, json_string_value(model),
                   json_string_length(model), req->entity.len);
    if (d->tool)
        mock_chat_set_tool(c, &req->pool, d->tool, d->tool_len, d->chunks);
    else if (d->echo)
        mock_chat_set_text(c, &req->pool, last_user ? last_user : "", last_user_len, d->chunks);
    else if (d->bytes >= 0)
        mock_chat_set_bytes(c, &req->pool, (size_t)d->bytes, d->chunks);
    else
        mock_chat_set_words(c, &req->pool, d->chunks);
    set_request_id(req, c->id + 9); /* "mock..." */

    if (!json_is_true(json_object_get(root, "stream"))) {
        mock_sb_t sb;
        mock_sb_init(&sb, &req->pool, 512 + c->text_len + c->model_len);
        mock_chat_body(&sb, c);
        send_body(thr, req, d, 200, h2o_iovec_init(sb.base, sb.len));
        return;
    }
    pending_t *p = pending_new(thr, req, d);
    p->chat = chat; /* its buffers live in the request pool */
    c = &p->chat;
    p->stream = 1;
    p->include_usage =
        json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    p->latency = d->latency_ms ? mock_timer_for(thr, (uint32_t)d->latency_ms) : NULL;
    p->interval = d->interval_ms ? mock_timer_for(thr, (uint32_t)d->interval_ms) : NULL;
    size_t max_piece = 0;
    for (int k = 0; k < c->pieces; k++)
        if (c->cuts[k + 1] - c->cuts[k] > max_piece) max_piece = c->cuts[k + 1] - c->cuts[k];
    mock_sb_init(&p->sb, &req->pool, c->prefix.len + 256 + 6 * (max_piece + c->tool_len));
    req->res.status = 200;
    req->res.reason = "OK";
    add_header(req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("text/event-stream"));
    add_header(req, H2O_TOKEN_CACHE_CONTROL, H2O_STRLIT("no-cache"));
    dispatch(p);
}

static void handle_embeddings(mock_thread_t *thr, h2o_req_t *req, mock_directive_t *d)
{
    json_t *root = parse_body(req);
    if (!json_is_object(root)) {
        send_error(req, 400, "We could not parse the JSON body of your request.", NULL);
        return;
    }
    json_t *model = json_object_get(root, "model"), *input = json_object_get(root, "input");
    if (!json_is_string(model)) {
        send_error(req, 400, "you must provide a model parameter", "model");
        return;
    }
    size_t n;
    if (json_is_string(input))
        n = 1;
    else if (json_is_array(input) && json_array_size(input) > 0)
        n = json_is_integer(json_array_get(input, 0)) ? 1
                                                      : json_array_size(input); /* one token list, or many */
    else {
        send_error(req, 400, "'input' must be a string or a non-empty array", "input");
        return;
    }
    if (check_timers(thr, req, d) != 0 || maybe_fail(thr, req, d)) return;
    const char *fmt = json_string_value(json_object_get(root, "encoding_format"));
    mock_sb_t sb;
    mock_sb_init(&sb, &req->pool, 160 + n * 120 + json_string_length(model) * 6);
    mock_openai_embeddings(&sb, json_string_value(model), json_string_length(model), n,
                           fmt && strcmp(fmt, "base64") == 0, req->entity.len / 4 ? req->entity.len / 4 : 1);
    send_body(thr, req, d, 200, h2o_iovec_init(sb.base, sb.len));
}

/* ------------------------------------- Anthropic messages, OpenAI Responses */

static void send_anthropic_error(h2o_req_t *req, int status, const char *message)
{
    mock_sb_t sb;
    mock_sb_init(&sb, &req->pool, 256 + strlen(message) * 6);
    mock_anthropic_error(&sb, status, message);
    set_json_headers(req, status);
    send_now(req, h2o_iovec_init(sb.base, sb.len));
}

/* Scans directives in every message's content (string, or blocks with text).
 * *tool_result: the last message carries a tool result (answer in text then). */
static int scan_messages(h2o_req_t *req, mock_directive_t *d, json_t *msgs, int *tool_result, char *err,
                         size_t errcap)
{
    size_t i;
    json_t *m;
    *tool_result = 0;
    if (json_is_string(msgs))
        return mock_directive_scan(d, json_string_value(msgs), json_string_length(msgs), err, errcap);
    json_array_foreach(msgs, i, m)
    {
        const char *text;
        size_t n;
        json_t *content = json_object_get(m, "content");
        if (text_of(content, &req->pool, &text, &n) == 0 && mock_directive_scan(d, text, n, err, errcap) != 0)
            return -1;
        const char *type = json_string_value(json_object_get(m, "type"));
        int tr = type && strcmp(type, "function_call_output") == 0;
        size_t j;
        json_t *b;
        if (json_is_array(content)) json_array_foreach(content, j, b)
            {
                const char *bt = json_string_value(json_object_get(b, "type"));
                if (bt && strcmp(bt, "tool_result") == 0) tr = 1;
            }
        *tool_result = tr;
    }
    return 0;
}

/* POST /v1/messages (anthropic = 1) and POST /v1/responses: whole answer or
 * whole stream at once (latency, pacing and hang are not honoured here). */
static void handle_typed(mock_thread_t *thr, h2o_req_t *req, mock_directive_t *d, h2o_iovec_t xmock,
                         int anthropic)
{
    char err[160];
    json_t *root = parse_body(req);
    void (*fail)(h2o_req_t *, int, const char *) = anthropic ? send_anthropic_error : NULL;
#define FAIL(st, msg)                                                                                        \
    do {                                                                                                     \
        if (fail)                                                                                            \
            fail(req, st, msg);                                                                              \
        else                                                                                                 \
            send_error(req, st, msg, NULL);                                                                  \
        return;                                                                                              \
    } while (0)
    if (!json_is_object(root)) FAIL(400, "lumkey-mock expects a JSON object");
    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model)) FAIL(400, "model: field required");
    json_t *msgs = json_object_get(root, anthropic ? "messages" : "input");
    if (anthropic ? !json_is_array(msgs) || json_array_size(msgs) == 0
                  : !json_is_array(msgs) && !json_is_string(msgs))
        FAIL(400, anthropic ? "messages: field required" : "input: field required");
    if (anthropic && h2o_find_header_by_str(&req->headers, H2O_STRLIT("anthropic-version"), -1) < 0)
        FAIL(400, "anthropic-version: header is required");
    int tool_result;
    if (scan_messages(req, d, msgs, &tool_result, err, sizeof err) != 0) FAIL(400, err);
    if (xmock.base && mock_directive_apply(d, xmock.base, xmock.len, err, sizeof(err)) != 0) FAIL(400, err);
    if (tool_result) d->tool = NULL;
    mock_directive_for_model(d, json_string_value(model), json_string_length(model));
    if (check_timers(thr, req, d) != 0) return;
    if (d->status && d->status != 200) {
        char msg[96];
        snprintf(msg, sizeof msg, "lumkey-mock: simulated HTTP %d error", d->status);
        FAIL(d->status, msg);
    }
#undef FAIL
    mock_answer_t a;
    uint64_t uid = ((uint64_t)mock_cfg.boot << 48) ^ ((uint64_t)thr->index << 40) ^ ++thr->served;
    mock_answer_init(&a, &req->pool, anthropic ? "msg_" : "resp_", uid, h2o_now(thr->ctx.loop) / 1000,
                     json_string_value(model), json_string_length(model), d->tool, d->tool_len, d->chunks,
                     req->entity.len);
    int stream = json_is_true(json_object_get(root, "stream"));
    mock_sb_t sb;
    mock_sb_init(&sb, &req->pool, 2048 + (size_t)a.pieces * 200 + a.model_len * 12);
    if (anthropic)
        (stream ? mock_anthropic_stream : mock_anthropic_body)(&sb, &a);
    else
        (stream ? mock_responses_stream : mock_responses_body)(&sb, &a);
    h2o_iovec_t v = h2o_strdup(&req->pool, a.id, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers,
                          H2O_STRLIT(anthropic ? "request-id" : "x-request-id"), 0, NULL, v.base, v.len);
    req->res.status = 200;
    req->res.reason = "OK";
    if (stream) {
        add_header(req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("text/event-stream"));
        add_header(req, H2O_TOKEN_CACHE_CONTROL, H2O_STRLIT("no-cache"));
        /* one event at a time: interval_ms paces them, close_after cuts the stream */
        pending_t *p = pending_new(thr, req, d);
        p->typed = h2o_iovec_init(sb.base, sb.len);
        p->stream = 1;
        p->latency = d->latency_ms ? mock_timer_for(thr, (uint32_t)d->latency_ms) : NULL;
        p->interval = d->interval_ms ? mock_timer_for(thr, (uint32_t)d->interval_ms) : NULL;
        dispatch(p);
        return;
    } else {
        add_header(req, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/json"));
    }
    send_now(req, h2o_iovec_init(sb.base, sb.len));
}

/* /openai/deployments/{name}/(chat/completions|embeddings): the suffix as an
 * OpenAI path ("/v1/chat/completions"), or {NULL,0}. api-version is required. */
static h2o_iovec_t azure_path(h2o_req_t *req, h2o_iovec_t path)
{
    static const char pre[] = "/openai/deployments/";
    if (path.len <= sizeof pre - 1 || memcmp(path.base, pre, sizeof pre - 1) != 0)
        return h2o_iovec_init(NULL, 0);
    const char *name = path.base + sizeof pre - 1, *end = path.base + path.len;
    const char *slash = memchr(name, '/', (size_t)(end - name));
    if (!slash || slash == name) return h2o_iovec_init(NULL, 0);
    h2o_iovec_t q = req->query_at == SIZE_MAX
                        ? h2o_iovec_init(NULL, 0)
                        : h2o_iovec_init(req->path.base + req->query_at, req->path.len - req->query_at);
    if (!q.base || !memmem(q.base, q.len, "api-version=", 12)) return h2o_iovec_init(NULL, 0);
    size_t n = (size_t)(end - slash);
    char *p = h2o_mem_alloc_pool(&req->pool, n + 3);
    memcpy(p, "/v1", 3);
    memcpy(p + 3, slash, n);
    return h2o_iovec_init(p, n + 3);
}

static int peer_is_loopback(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    if (req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) == 0) return 0;
    if (ss.ss_family == AF_INET) return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

static void handle_hook(h2o_req_t *req, h2o_iovec_t path)
{
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
    if (!peer_is_loopback(req)) {
        send_error(req, 404, "Invalid URL", NULL);
        return;
    }
    mock_sb_t sb;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/_mock/requests")) && (get || del)) {
        mock_sb_init(&sb, &req->pool, 4096);
        if (del) {
            mock_record_clear();
            MOCK_SB_LIT(&sb, "{\"cleared\":true}");
        } else {
            mock_record_dump(&sb);
        }
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/_mock/stats")) && get) {
        mock_sb_init(&sb, &req->pool, 64);
        MOCK_SB_LIT(&sb, "{\"requests\":");
        mock_sb_u64(&sb, atomic_load(&mock_total_requests));
        MOCK_SB_LIT(&sb, "}");
    } else {
        send_error(req, 404, "Invalid URL", NULL);
        return;
    }
    set_json_headers(req, 200);
    send_now(req, h2o_iovec_init(sb.base, sb.len));
}

/* The provider credential in the header each provider kind uses: Anthropic
 * x-api-key (on /v1/messages), Azure api-key (on deployment paths), else
 * Authorization: Bearer. Exactly one such header. */
static int authorized(h2o_req_t *req, int anthropic, int azure)
{
    const char *want = mock_cfg.expect_auth;
    size_t want_len = mock_cfg.expect_auth_len;
    ssize_t at;
    if (anthropic || azure) {
        const char *name = anthropic ? "x-api-key" : "api-key";
        at = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
        if (at < 0 || h2o_find_header_by_str(&req->headers, name, strlen(name), at) >= 0) return 0;
        want += 7; /* "Bearer " */
        want_len -= 7;
    } else {
        at = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
        if (at < 0 || h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, at) >= 0) return 0;
    }
    h2o_iovec_t v = req->headers.entries[at].value;
    if (v.len != want_len) return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < v.len; i++)
        diff |= (unsigned char)(v.base[i] ^ want[i]);
    return diff == 0;
}

int mock_handler_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    mock_thread_t *thr = thread_of(req);
    h2o_iovec_t path = req->path_normalized;
    if (path.len >= 7 && memcmp(path.base, "/_mock/", 7) == 0) {
        handle_hook(req, path);
        return 0;
    }
    atomic_fetch_add_explicit(&mock_total_requests, 1, memory_order_relaxed);
    mock_record_add(req);
    int anthropic = h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages"));
    h2o_iovec_t az = azure_path(req, path);
    if (az.base) path = az;
    if (mock_cfg.expect_auth && !authorized(req, anthropic, az.base != NULL)) {
        if (anthropic) {
            send_anthropic_error(req, 401, "invalid x-api-key");
            return 0;
        }
        /* Like OpenAI, name the key that was refused, but in full (OpenAI masks the
         * middle): the worst case for a gateway that must not pass it on. */
        ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
        h2o_iovec_t presented = ai >= 0 ? req->headers.entries[ai].value : h2o_iovec_init(NULL, 0);
        if (presented.len > 7 && strncasecmp(presented.base, "Bearer ", 7) == 0) {
            presented.base += 7;
            presented.len -= 7;
        }
        if (presented.len > 512) presented.len = 512;
        char *msg = h2o_mem_alloc_pool(&req->pool, presented.len + 64);
        snprintf(msg, presented.len + 64, "Incorrect API key provided: %.*s.", (int)presented.len,
                 presented.base ? presented.base : "");
        send_error(req, 401, msg, NULL);
        return 0;
    }
    mock_directive_t d;
    mock_directive_init(&d, mock_cfg.chunks, mock_cfg.interval_ms, mock_cfg.latency_ms);
    h2o_iovec_t xmock = {NULL, 0};
    ssize_t at = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-mock"), -1);
    if (at >= 0) xmock = req->headers.entries[at].value;

    int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    if (post && h2o_memis(path.base, path.len, H2O_STRLIT("/v1/chat/completions"))) {
        handle_chat(thr, req, &d, xmock); /* body directives first, then the header */
        return 0;
    }
    if (post && (anthropic || h2o_memis(path.base, path.len, H2O_STRLIT("/v1/responses")))) {
        handle_typed(thr, req, &d, xmock, anthropic);
        return 0;
    }
    char err[160];
    if (xmock.base && mock_directive_apply(&d, xmock.base, xmock.len, err, sizeof(err)) != 0) {
        send_error(req, 400, err, NULL);
        return 0;
    }
    if (post && h2o_memis(path.base, path.len, H2O_STRLIT("/v1/embeddings"))) {
        handle_embeddings(thr, req, &d);
    } else if (get && h2o_memis(path.base, path.len, H2O_STRLIT("/v1/models"))) {
        if (check_timers(thr, req, &d) == 0 && !maybe_fail(thr, req, &d))
            send_body(thr, req, &d, 200, h2o_iovec_init(mock_openai_models, mock_openai_models_len));
    } else {
        char msg[160];
        snprintf(msg, sizeof(msg), "Invalid URL (%.*s %.*s)",
                 (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base,
                 (int)(path.len > 100 ? 100 : path.len), path.base);
        send_error(req, 404, msg, NULL);
    }
    return 0;
}
