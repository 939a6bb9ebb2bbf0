/*  edge_api - the API dialects the edge serves, one small table row each.
 *
 *  A row says: the client path, the endpoint name (audit, metrics, DECIDE),
 *  the error shape (OpenAI or Anthropic), which provider kinds can serve it,
 *  the upstream path per kind, and the event that ends a complete stream.
 *  Helpers write errors and mid-stream error events in the dialect's own
 *  shape, pick token usage out of any of the answer shapes, and build the
 *  upstream header lines (credential header per kind, allowlisted client
 *  headers, traceparent).
 *  Knows nothing of workers, audit or the request flow (edge_chat.c).
 */
#ifndef EDGE_API_H
#define EDGE_API_H

#include <h2o.h>
#include <jansson.h>
#include <stdint.h>

#include "lk_buf.h"

typedef enum { EDGE_SHAPE_OPENAI, EDGE_SHAPE_ANTHROPIC } edge_shape_t;

typedef enum {
    EDGE_KIND_OPENAI,
    EDGE_KIND_COMPAT,
    EDGE_KIND_ANTHROPIC,
    EDGE_KIND_AZURE,
    EDGE_KIND_UNKNOWN
} edge_kind_t;

typedef struct {
    const char *path;     /* client path, exact ("/v1/messages") */
    const char *endpoint; /* "chat.completions", "messages", "responses", "embeddings" */
    edge_shape_t shape;
    int streams;            /* the body's "stream": true is honoured */
    int anthropic;          /* served by anthropic providers (else by openai, compat, azure) */
    const char *oa_suffix;  /* upstream path after an OpenAI-style base URL ("/chat/completions") */
    int azure_ok;           /* azure deployments serve it */
    const char *done_event; /* SSE event (name or data "type") that completes a stream; NULL: data [DONE] */
    int local;              /* answered by Lumkey itself (GET /v1/models): no provider call */
} edge_api_t;

/* The row for an exact request path, or NULL. */
const edge_api_t *edge_api_find(h2o_iovec_t path);
edge_kind_t edge_api_kind(const char *kind);
/* Whether a provider kind can serve this API (no translation between dialects). */
int edge_api_kind_serves(const edge_api_t *api, edge_kind_t kind);

/* The GET /v1/models answer for a JSON array of model ids: OpenAI's list, or
 * Anthropic's ({data:[{type:"model",id,display_name,created_at}],has_more,
 * first_id,last_id}) when the client sent anthropic-version. Caller frees. */
char *edge_api_models_body(h2o_req_t *req, const char *models_json, size_t len);

/* Sends a complete error answer in the API's shape (type NULL: from status).
 * Anthropic answers also carry request-id. */
void edge_api_send_error(const edge_api_t *api, h2o_req_t *req, int status, const char *rid, const char *type,
                         const char *code, const char *message);
/* Appends one SSE error event in the API's shape: chat `data: {"error":..}`,
 * Anthropic `event: error` {"type":"error","error":{..}}, Responses
 * `event: error`. 0 / -1. */
int edge_api_stream_error(const edge_api_t *api, lk_buf_t *out, const char *code, const char *message)
    __attribute__((warn_unused_result));
/* Appends one SSE event (event line if any, data split into data lines). 0 / -1. */
int edge_api_sse_write(lk_buf_t *out, const char *event, size_t event_len, const char *data, size_t data_len)
    __attribute__((warn_unused_result));

typedef struct {
    int64_t in, out, total; /* -1: not seen */
} edge_usage_t;

/* Takes token counts from an answer or a stream event object, whatever the
 * dialect: usage / message.usage / response.usage, with prompt_tokens or
 * input_tokens, completion_tokens or output_tokens, total_tokens. */
void edge_api_take_usage(edge_usage_t *u, json_t *obj);
/* total = in + out when the provider gave no total. */
void edge_api_finish_usage(edge_usage_t *u);

/* The upstream path for a provider kind: base path + API path. 0 / -1. */
int edge_api_upstream_path(const edge_api_t *api, edge_kind_t kind, const char *base_path,
                           const char *upstream_model, char *out, size_t cap)
    __attribute__((warn_unused_result));
/* Appends the credential header line for a kind ("Authorization: Bearer ..",
 * "x-api-key: ..", "api-key: .."). 0 / -1 (CR/LF/empty secret). */
int edge_api_cred_header(edge_kind_t kind, lk_buf_t *out, const char *secret, size_t len)
    __attribute__((warn_unused_result));
/* Appends the allowlisted client headers the kind understands (openai-beta;
 * anthropic-version (default 2023-06-01), anthropic-beta) and traceparent /
 * tracestate. Values with control characters or over 512 bytes are dropped.
 * 0 / -1. */
int edge_api_pass_headers(h2o_req_t *req, edge_kind_t kind, const char *traceparent, lk_buf_t *out)
    __attribute__((warn_unused_result));

#define EDGE_AZURE_API_VERSION      "2024-10-21"
#define EDGE_ANTHROPIC_VERSION_DFLT "2023-06-01"

#endif
