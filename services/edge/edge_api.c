/*  edge_api - the API dialects the edge serves, one small table row each. */
#include "edge_api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_http.h"

static const edge_api_t APIS[] = {
    {"/v1/chat/completions", "chat.completions", EDGE_SHAPE_OPENAI, 1, 0, "/chat/completions", 1, NULL, 0},
    {"/v1/messages", "messages", EDGE_SHAPE_ANTHROPIC, 1, 1, NULL, 0, "message_stop", 0},
    {"/v1/responses", "responses", EDGE_SHAPE_OPENAI, 1, 0, "/responses", 0, "response.completed", 0},
    {"/v1/embeddings", "embeddings", EDGE_SHAPE_OPENAI, 0, 0, "/embeddings", 1, NULL, 0},
    {"/v1/models", "models", EDGE_SHAPE_OPENAI, 0, 0, NULL, 0, NULL, 1},
};

char *edge_api_models_body(h2o_req_t *req, const char *models_json, size_t len)
{
    json_t *ids = json_loadb(models_json, len, 0, NULL), *data = json_array();
    int anthropic = edge_http_header(req, "anthropic-version", NULL).base != NULL;
    size_t i;
    json_t *id;
    if (!json_is_array(ids) || !data) goto fail;
    json_array_foreach(ids, i, id)
    {
        if (!json_is_string(id)) continue;
        json_t *m = anthropic ? json_pack("{s:s,s:O,s:O,s:s}", "type", "model", "id", id, "display_name", id,
                                          "created_at", "1970-01-01T00:00:00Z")
                              : json_pack("{s:O,s:s,s:i,s:s}", "id", id, "object", "model", "created", 0,
                                          "owned_by", "lumkey");
        if (!m || json_array_append_new(data, m) != 0) goto fail;
    }
    json_t *out;
    if (anthropic) {
        size_t n = json_array_size(data);
        out = json_pack("{s:O,s:b,s:o,s:o}", "data", data, "has_more", 0, "first_id",
                        n ? json_incref(json_object_get(json_array_get(data, 0), "id")) : json_null(),
                        "last_id",
                        n ? json_incref(json_object_get(json_array_get(data, n - 1), "id")) : json_null());
    } else {
        out = json_pack("{s:s,s:O}", "object", "list", "data", data);
    }
    char *s = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    json_decref(data);
    json_decref(ids);
    return s;
fail:
    json_decref(data);
    json_decref(ids);
    return NULL;
}

const edge_api_t *edge_api_find(h2o_iovec_t path)
{
    for (size_t i = 0; i < sizeof APIS / sizeof APIS[0]; i++)
        if (h2o_memis(path.base, path.len, APIS[i].path, strlen(APIS[i].path))) return &APIS[i];
    return NULL;
}

edge_kind_t edge_api_kind(const char *kind)
{
    if (!kind) return EDGE_KIND_UNKNOWN;
    if (strcmp(kind, "openai") == 0) return EDGE_KIND_OPENAI;
    if (strcmp(kind, "openai-compatible") == 0) return EDGE_KIND_COMPAT;
    if (strcmp(kind, "anthropic") == 0) return EDGE_KIND_ANTHROPIC;
    if (strcmp(kind, "azure") == 0) return EDGE_KIND_AZURE;
    return EDGE_KIND_UNKNOWN;
}

int edge_api_kind_serves(const edge_api_t *api, edge_kind_t kind)
{
    switch (kind) {
    case EDGE_KIND_ANTHROPIC:
        return api->anthropic;
    case EDGE_KIND_OPENAI:
    case EDGE_KIND_COMPAT:
        return !api->anthropic;
    case EDGE_KIND_AZURE:
        return api->azure_ok;
    default:
        return 0;
    }
}

/* ----------------------------------------------------------- errors -- */

static const char *anthropic_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 529:
    case 503:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static int is_anthropic_type(const char *t)
{
    static const char *const known[] = {"invalid_request_error",
                                        "authentication_error",
                                        "permission_error",
                                        "not_found_error",
                                        "request_too_large",
                                        "rate_limit_error",
                                        "api_error",
                                        "overloaded_error",
                                        NULL};
    for (int i = 0; t && known[i]; i++)
        if (strcmp(t, known[i]) == 0) return 1;
    return 0;
}

void edge_api_send_error(const edge_api_t *api, h2o_req_t *req, int status, const char *rid, const char *type,
                         const char *code, const char *message)
{
    if (!api || api->shape == EDGE_SHAPE_OPENAI) {
        edge_http_send_error(req, status, rid, type, code, message);
        return;
    }
    json_t *err = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                            is_anthropic_type(type) ? type : anthropic_type(status), "message", message);
    char *s = err ? json_dumps(err, JSON_COMPACT) : NULL;
    if (rid)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("request-id"), 0, NULL, rid,
                              strlen(rid));
    if (s) {
        edge_http_send_json(req, status, rid, s, strlen(s));
    } else {
        static const char fallback[] = "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                                       "\"internal error\"}}";
        edge_http_send_json(req, 500, rid, fallback, sizeof fallback - 1);
    }
    free(s);
    json_decref(err);
}

int edge_api_sse_write(lk_buf_t *out, const char *event, size_t event_len, const char *data, size_t data_len)
{
    if (event_len && (lk_buf_append(out, "event: ", 7) != 0 || lk_buf_append(out, event, event_len) != 0 ||
                      lk_buf_append(out, "\n", 1) != 0))
        return -1;
    const char *p = data, *end = data + data_len;
    while (p <= end) { /* one "data:" line per line */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (lk_buf_append(out, "data: ", 6) != 0 || lk_buf_append(out, p, n) != 0 ||
            lk_buf_append(out, "\n", 1) != 0)
            return -1;
        if (!nl) break;
        p = nl + 1;
    }
    return lk_buf_append(out, "\n", 1);
}

int edge_api_stream_error(const edge_api_t *api, lk_buf_t *out, const char *code, const char *message)
{
    json_t *ev;
    const char *name = "error";
    if (api->shape == EDGE_SHAPE_ANTHROPIC) {
        ev =
            json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", "api_error", "message", message);
    } else if (api->done_event) { /* Responses: its own error event, plus "error" so the SDK raises */
        ev = json_pack("{s:s,s:s,s:s,s:n,s:{s:s,s:s,s:s}}", "type", "error", "code", code, "message", message,
                       "param", "error", "type", "api_error", "code", code, "message", message);
    } else { /* chat: a data object with "error" */
        name = NULL;
        ev = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", message, "type", "api_error", "param",
                       "code", code);
    }
    char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    int rc = s ? edge_api_sse_write(out, name, name ? strlen(name) : 0, s, strlen(s)) : -1;
    free(s);
    json_decref(ev);
    return rc;
}

/* ------------------------------------------------------------ usage -- */

static void take_counts(edge_usage_t *u, json_t *usage)
{
    if (!json_is_object(usage)) return;
    static const char *const in[] = {"prompt_tokens", "input_tokens"};
    static const char *const out[] = {"completion_tokens", "output_tokens"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(usage, in[i]);
        if (json_is_integer(v)) u->in = json_integer_value(v);
        v = json_object_get(usage, out[i]);
        if (json_is_integer(v)) u->out = json_integer_value(v);
    }
    json_t *t = json_object_get(usage, "total_tokens");
    if (json_is_integer(t)) u->total = json_integer_value(t);
}

void edge_api_take_usage(edge_usage_t *u, json_t *obj)
{
    if (!json_is_object(obj)) return;
    take_counts(u, json_object_get(obj, "usage"));
    json_t *inner = json_object_get(obj, "message"); /* Anthropic message_start */
    if (json_is_object(inner)) take_counts(u, json_object_get(inner, "usage"));
    inner = json_object_get(obj, "response"); /* Responses response.completed */
    if (json_is_object(inner)) take_counts(u, json_object_get(inner, "usage"));
}

void edge_api_finish_usage(edge_usage_t *u)
{
    if (u->total < 0 && (u->in >= 0 || u->out >= 0))
        u->total = (u->in > 0 ? u->in : 0) + (u->out > 0 ? u->out : 0);
}

/* --------------------------------------------------------- upstream -- */

static int model_is_safe(const char *m)
{
    if (!m || !*m) return 0;
    for (const char *p = m; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.')) return 0;
    return 1;
}

int edge_api_upstream_path(const edge_api_t *api, edge_kind_t kind, const char *base_path,
                           const char *upstream_model, char *out, size_t cap)
{
    int n;
    size_t bl = strlen(base_path);
    switch (kind) {
    case EDGE_KIND_ANTHROPIC: /* base URL with or without /v1 */
        n = snprintf(out, cap, "%s%s/messages", base_path,
                     bl >= 3 && strcmp(base_path + bl - 3, "/v1") == 0 ? "" : "/v1");
        break;
    case EDGE_KIND_AZURE: /* {base}/openai/deployments/{deployment}/chat/completions?api-version= */
        if (!model_is_safe(upstream_model)) return -1;
        n = snprintf(out, cap, "%s/openai/deployments/%s%s?api-version=%s", base_path, upstream_model,
                     api->oa_suffix, EDGE_AZURE_API_VERSION);
        break;
    case EDGE_KIND_OPENAI:
    case EDGE_KIND_COMPAT:
        n = snprintf(out, cap, "%s%s", base_path, api->oa_suffix);
        break;
    default:
        return -1;
    }
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int add_line(lk_buf_t *out, const char *name, const char *v, size_t n)
{
    return lk_buf_append(out, name, strlen(name)) != 0 || lk_buf_append(out, ": ", 2) != 0 ||
                   lk_buf_append(out, v, n) != 0 || lk_buf_append(out, "\r\n", 2) != 0
               ? -1
               : 0;
}

int edge_api_cred_header(edge_kind_t kind, lk_buf_t *out, const char *secret, size_t len)
{
    if (len == 0 || memchr(secret, '\r', len) || memchr(secret, '\n', len)) return -1;
    switch (kind) {
    case EDGE_KIND_ANTHROPIC:
        return add_line(out, "x-api-key", secret, len);
    case EDGE_KIND_AZURE:
        return add_line(out, "api-key", secret, len);
    default:
        return lk_buf_append(out, "Authorization: Bearer ", 22) != 0 ||
                       lk_buf_append(out, secret, len) != 0 || lk_buf_append(out, "\r\n", 2) != 0
                   ? -1
                   : 0;
    }
}

static int clean_value(h2o_iovec_t v)
{
    if (!v.base || v.len == 0 || v.len > 512) return 0;
    for (size_t i = 0; i < v.len; i++)
        if ((unsigned char)v.base[i] < 0x20 || (unsigned char)v.base[i] == 0x7f) return 0;
    return 1;
}

/* The documented allowlist: nothing else from the client reaches a provider. */
int edge_api_pass_headers(h2o_req_t *req, edge_kind_t kind, const char *traceparent, lk_buf_t *out)
{
    static const char *const openai_hdrs[] = {"openai-beta", NULL};
    static const char *const anthropic_hdrs[] = {"anthropic-beta", NULL};
    const char *const *list = kind == EDGE_KIND_ANTHROPIC ? anthropic_hdrs : openai_hdrs;
    for (int i = 0; list[i]; i++) {
        h2o_iovec_t v = edge_http_header(req, list[i], NULL);
        if (clean_value(v) && add_line(out, list[i], v.base, v.len) != 0) return -1;
    }
    if (kind == EDGE_KIND_ANTHROPIC) {
        h2o_iovec_t v = edge_http_header(req, "anthropic-version", NULL);
        if (!clean_value(v)) v = h2o_iovec_init(H2O_STRLIT(EDGE_ANTHROPIC_VERSION_DFLT));
        if (add_line(out, "anthropic-version", v.base, v.len) != 0) return -1;
    }
    if (traceparent && *traceparent) {
        if (add_line(out, "traceparent", traceparent, strlen(traceparent)) != 0) return -1;
        h2o_iovec_t ts = edge_http_header(req, "tracestate", NULL);
        if (clean_value(ts) && add_line(out, "tracestate", ts.base, ts.len) != 0) return -1;
    }
    return 0;
}
