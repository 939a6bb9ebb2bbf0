/*  mock_openai - OpenAI-shaped bodies for lumkey-mock. */
#include "mock_openai.h"

#include <stdio.h>
#include <string.h>

static const char *const words[] = {"Hello", " from", " lumkey-mock", ".",       " This",
                                    " is",   " a",    " canned",      " answer", "."};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static uint64_t tokens_of(size_t bytes)
{
    return bytes / 4 ? bytes / 4 : 1;
}

void mock_chat_init(mock_chat_t *c, h2o_mem_pool_t *pool, uint64_t uid, uint64_t created, const char *model,
                    size_t model_len, size_t request_bytes)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->id, sizeof(c->id), "chatcmpl-mock%016llx", (unsigned long long)uid);
    snprintf(c->call_id, sizeof(c->call_id), "call_mock%016llx", (unsigned long long)uid);
    c->created = created;
    c->model = model;
    c->model_len = model_len;
    c->prompt_tokens = tokens_of(request_bytes);
    mock_sb_init(&c->prefix, pool, 160 + model_len * 6);
    MOCK_SB_LIT(&c->prefix, "data: {\"id\":\"");
    mock_sb_add(&c->prefix, c->id, strlen(c->id));
    MOCK_SB_LIT(&c->prefix, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    mock_sb_u64(&c->prefix, created);
    MOCK_SB_LIT(&c->prefix, ",\"model\":");
    mock_sb_json_str(&c->prefix, model, model_len);
    MOCK_SB_LIT(&c->prefix, ",\"system_fingerprint\":\"fp_mock\",\"choices\":[");
}

/* Cuts text into `pieces` nearly equal parts, never inside a UTF-8 sequence. */
static void cut_equal(mock_chat_t *c, h2o_mem_pool_t *pool, int pieces)
{
    c->pieces = pieces;
    c->cuts = h2o_mem_alloc_pool(pool, sizeof(size_t) * ((size_t)pieces + 1));
    for (int i = 0; i <= pieces; i++) {
        size_t at = (size_t)((unsigned long long)c->text_len * (unsigned)i / (unsigned)pieces);
        while (at < c->text_len && ((unsigned char)c->text[at] & 0xc0) == 0x80)
            at++;
        if (i > 0 && at < c->cuts[i - 1]) at = c->cuts[i - 1];
        c->cuts[i] = at;
    }
    c->completion_tokens = tokens_of(c->text_len + c->tool_len);
}

void mock_chat_set_words(mock_chat_t *c, h2o_mem_pool_t *pool, int pieces)
{
    size_t len = 0;
    for (int i = 0; i < pieces; i++)
        len += strlen(words[(size_t)i % NWORDS]);
    char *text = h2o_mem_alloc_pool(pool, len + 1);
    c->pieces = pieces;
    c->cuts = h2o_mem_alloc_pool(pool, sizeof(size_t) * ((size_t)pieces + 1));
    size_t at = 0;
    for (int i = 0; i < pieces; i++) {
        const char *w = words[(size_t)i % NWORDS];
        size_t n = strlen(w);
        c->cuts[i] = at;
        memcpy(text + at, w, n);
        at += n;
    }
    c->cuts[pieces] = at;
    text[at] = '\0';
    c->text = text;
    c->text_len = len;
    c->tool = NULL;
    c->completion_tokens = tokens_of(len);
}

void mock_chat_set_text(mock_chat_t *c, h2o_mem_pool_t *pool, const char *text, size_t n, int pieces)
{
    c->text = text;
    c->text_len = n;
    c->tool = NULL;
    cut_equal(c, pool, pieces);
}

void mock_chat_set_bytes(mock_chat_t *c, h2o_mem_pool_t *pool, size_t n, int pieces)
{
    static const char filler[] = "lumkey-mock filler 0123456789 ";
    char *text = h2o_mem_alloc_pool(pool, n + 1);
    for (size_t i = 0; i < n; i++)
        text[i] = filler[i % (sizeof(filler) - 1)];
    text[n] = '\0';
    mock_chat_set_text(c, pool, text, n, pieces);
}

void mock_chat_set_tool(mock_chat_t *c, h2o_mem_pool_t *pool, const char *name, size_t n, int pieces)
{
    c->tool = name;
    c->tool_len = n;
    c->text = MOCK_TOOL_ARGS;
    c->text_len = sizeof(MOCK_TOOL_ARGS) - 1;
    cut_equal(c, pool, pieces);
}

static void usage(mock_sb_t *sb, const mock_chat_t *c)
{
    MOCK_SB_LIT(sb, "\"usage\":{\"prompt_tokens\":");
    mock_sb_u64(sb, c->prompt_tokens);
    MOCK_SB_LIT(sb, ",\"completion_tokens\":");
    mock_sb_u64(sb, c->completion_tokens);
    MOCK_SB_LIT(sb, ",\"total_tokens\":");
    mock_sb_u64(sb, c->prompt_tokens + c->completion_tokens);
    MOCK_SB_LIT(sb, "}");
}

void mock_chat_body(mock_sb_t *sb, const mock_chat_t *c)
{
    MOCK_SB_LIT(sb, "{\"id\":\"");
    mock_sb_add(sb, c->id, strlen(c->id));
    MOCK_SB_LIT(sb, "\",\"object\":\"chat.completion\",\"created\":");
    mock_sb_u64(sb, c->created);
    MOCK_SB_LIT(sb, ",\"model\":");
    mock_sb_json_str(sb, c->model, c->model_len);
    MOCK_SB_LIT(
        sb,
        ",\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
    if (c->tool) {
        MOCK_SB_LIT(sb, "\"content\":null,\"tool_calls\":[{\"id\":\"");
        mock_sb_add(sb, c->call_id, strlen(c->call_id));
        MOCK_SB_LIT(sb, "\",\"type\":\"function\",\"function\":{\"name\":");
        mock_sb_json_str(sb, c->tool, c->tool_len);
        MOCK_SB_LIT(sb, ",\"arguments\":");
        mock_sb_json_str(sb, c->text, c->text_len);
        MOCK_SB_LIT(sb, "}}],\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],");
    } else {
        MOCK_SB_LIT(sb, "\"content\":");
        mock_sb_json_str(sb, c->text, c->text_len);
        MOCK_SB_LIT(sb, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],");
    }
    usage(sb, c);
    MOCK_SB_LIT(sb, "}");
}

int mock_chat_nevents(const mock_chat_t *c)
{
    return c->tool ? c->pieces + 1 : c->pieces;
}

static void piece(mock_sb_t *sb, const mock_chat_t *c, int i)
{
    mock_sb_json_str(sb, c->text + c->cuts[i], c->cuts[i + 1] - c->cuts[i]);
}

void mock_chat_event(mock_sb_t *sb, const mock_chat_t *c, int k)
{
    mock_sb_add(sb, c->prefix.base, c->prefix.len);
    MOCK_SB_LIT(sb, "{\"index\":0,\"delta\":{");
    if (c->tool == NULL) {
        if (k == 0) MOCK_SB_LIT(sb, "\"role\":\"assistant\",");
        MOCK_SB_LIT(sb, "\"content\":");
        piece(sb, c, k);
    } else if (k == 0) {
        MOCK_SB_LIT(sb, "\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"");
        mock_sb_add(sb, c->call_id, strlen(c->call_id));
        MOCK_SB_LIT(sb, "\",\"type\":\"function\",\"function\":{\"name\":");
        mock_sb_json_str(sb, c->tool, c->tool_len);
        MOCK_SB_LIT(sb, ",\"arguments\":\"\"}}]");
    } else {
        MOCK_SB_LIT(sb, "\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":");
        piece(sb, c, k - 1);
        MOCK_SB_LIT(sb, "}}]");
    }
    MOCK_SB_LIT(sb, "},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

void mock_chat_final(mock_sb_t *sb, const mock_chat_t *c)
{
    mock_sb_add(sb, c->prefix.base, c->prefix.len);
    if (c->tool)
        MOCK_SB_LIT(sb,
                    "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}\n\n");
    else
        MOCK_SB_LIT(sb, "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
}

void mock_chat_usage(mock_sb_t *sb, const mock_chat_t *c)
{
    mock_sb_add(sb, c->prefix.base, c->prefix.len);
    MOCK_SB_LIT(sb, "],");
    usage(sb, c);
    MOCK_SB_LIT(sb, "}\n\n");
}

void mock_openai_error(mock_sb_t *sb, int status, const char *message, const char *param)
{
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    const char *code = NULL;
    switch (status) {
    case 401:
        code = "invalid_api_key";
        break;
    case 403:
        type = "permission_error";
        break;
    case 404:
        code = "not_found";
        break;
    case 429:
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
        break;
    case 503:
        code = "service_unavailable";
        break;
    default:
        break;
    }
    MOCK_SB_LIT(sb, "{\"error\":{\"message\":");
    mock_sb_json_str(sb, message, strlen(message));
    MOCK_SB_LIT(sb, ",\"type\":\"");
    mock_sb_add(sb, type, strlen(type));
    MOCK_SB_LIT(sb, "\",\"param\":");
    if (param)
        mock_sb_json_str(sb, param, strlen(param));
    else
        MOCK_SB_LIT(sb, "null");
    MOCK_SB_LIT(sb, ",\"code\":");
    if (code)
        mock_sb_json_str(sb, code, strlen(code));
    else
        MOCK_SB_LIT(sb, "null");
    MOCK_SB_LIT(sb, "}}");
}

/* A fixed 8-dimension vector, as JSON text and as base64 of little-endian float32. */
static const char embedding_json[] = "[0.0123,-0.0456,0.0789,-0.0012,0.0345,-0.0678,0.0901,-0.0234]";
static const float embedding_f32[8] = {0.0123f, -0.0456f, 0.0789f, -0.0012f,
                                       0.0345f, -0.0678f, 0.0901f, -0.0234f};

static void base64(mock_sb_t *sb, const unsigned char *in, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        char out[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63], i + 1 < n ? tbl[(v >> 6) & 63] : '=',
                       i + 2 < n ? tbl[v & 63] : '='};
        mock_sb_add(sb, out, 4);
    }
}

void mock_openai_embeddings(mock_sb_t *sb, const char *model, size_t model_len, size_t n, int b64,
                            uint64_t prompt_tokens)
{
    unsigned char raw[sizeof(embedding_f32)];
    memcpy(raw, embedding_f32, sizeof(raw)); /* x86-64 and arm64 are little-endian */
    MOCK_SB_LIT(sb, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) MOCK_SB_LIT(sb, ",");
        MOCK_SB_LIT(sb, "{\"object\":\"embedding\",\"index\":");
        mock_sb_u64(sb, i);
        MOCK_SB_LIT(sb, ",\"embedding\":");
        if (b64) {
            MOCK_SB_LIT(sb, "\"");
            base64(sb, raw, sizeof(raw));
            MOCK_SB_LIT(sb, "\"");
        } else {
            MOCK_SB_LIT(sb, embedding_json);
        }
        MOCK_SB_LIT(sb, "}");
    }
    MOCK_SB_LIT(sb, "],\"model\":");
    mock_sb_json_str(sb, model, model_len);
    MOCK_SB_LIT(sb, ",\"usage\":{\"prompt_tokens\":");
    mock_sb_u64(sb, prompt_tokens);
    MOCK_SB_LIT(sb, ",\"total_tokens\":");
    mock_sb_u64(sb, prompt_tokens);
    MOCK_SB_LIT(sb, "}}");
}

#define MODEL(id)                                                                                            \
    "{\"id\":\"" id "\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"lumkey-mock\"}"
const char mock_openai_models[] = "{\"object\":\"list\",\"data\":[" MODEL("gpt-4o-mini") "," MODEL(
    "gpt-4o") "," MODEL("gpt-4.1-mini") "," MODEL("text-embedding-3-small") "]}";
const size_t mock_openai_models_len = sizeof(mock_openai_models) - 1;
