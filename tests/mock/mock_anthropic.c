/*  mock_anthropic - Anthropic Messages and OpenAI Responses bodies for lumkey-mock. */
#include "mock_anthropic.h"

#include <stdio.h>
#include <string.h>

#include "mock_openai.h"

static const char *const words[] = {"Hello", " from", " lumkey-mock", ".",       " This",
                                    " is",   " a",    " canned",      " answer", "."};
#define NWORDS (sizeof(words) / sizeof(words[0]))

void mock_answer_init(mock_answer_t *a, h2o_mem_pool_t *pool, const char *prefix, uint64_t uid,
                      uint64_t created, const char *model, size_t model_len, const char *tool,
                      size_t tool_len, int pieces, size_t request_bytes)
{
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%smock%016llx", prefix, (unsigned long long)uid);
    a->model = model;
    a->model_len = model_len;
    a->created = created;
    a->pieces = pieces < 1 ? 1 : pieces;
    a->tool = tool;
    a->tool_len = tool_len;
    if (tool) {
        a->text = MOCK_TOOL_ARGS;
        a->text_len = strlen(MOCK_TOOL_ARGS);
        if ((size_t)a->pieces > a->text_len) a->pieces = (int)a->text_len;
    } else {
        size_t len = 0;
        for (int i = 0; i < a->pieces; i++)
            len += strlen(words[(size_t)i % NWORDS]);
        char *t = h2o_mem_alloc_pool(pool, len + 1);
        size_t at = 0;
        for (int i = 0; i < a->pieces; i++) {
            size_t n = strlen(words[(size_t)i % NWORDS]);
            memcpy(t + at, words[(size_t)i % NWORDS], n);
            at += n;
        }
        t[at] = '\0';
        a->text = t;
        a->text_len = len;
    }
    a->in_tokens = request_bytes / 4 ? request_bytes / 4 : 1;
    a->out_tokens = a->text_len / 4 ? a->text_len / 4 : 1;
}

/* Piece k of the answer: words for text, equal cuts for tool arguments. */
static void piece(const mock_answer_t *a, int k, const char **p, size_t *n)
{
    if (!a->tool) {
        size_t at = 0;
        for (int i = 0; i < k; i++)
            at += strlen(words[(size_t)i % NWORDS]);
        *p = a->text + at;
        *n = strlen(words[(size_t)k % NWORDS]);
        return;
    }
    size_t from = a->text_len * (size_t)k / (size_t)a->pieces,
           to = a->text_len * (size_t)(k + 1) / (size_t)a->pieces;
    *p = a->text + from;
    *n = to - from;
}

static void str(mock_sb_t *sb, const char *s, size_t n)
{
    mock_sb_json_str(sb, s, n);
}

static void lit_str(mock_sb_t *sb, const char *s)
{
    mock_sb_json_str(sb, s, strlen(s));
}

/* ------------------------------------------------------------ Anthropic */

static void tool_id(mock_sb_t *sb, const mock_answer_t *a)
{
    MOCK_SB_LIT(sb, "\"toolu_");
    mock_sb_add(sb, a->id + 4, strlen(a->id + 4));
    MOCK_SB_LIT(sb, "\"");
}

void mock_anthropic_body(mock_sb_t *sb, const mock_answer_t *a)
{
    MOCK_SB_LIT(sb, "{\"id\":");
    lit_str(sb, a->id);
    MOCK_SB_LIT(sb, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    str(sb, a->model, a->model_len);
    if (a->tool) {
        MOCK_SB_LIT(sb, ",\"content\":[{\"type\":\"tool_use\",\"id\":");
        tool_id(sb, a);
        MOCK_SB_LIT(sb, ",\"name\":");
        str(sb, a->tool, a->tool_len);
        MOCK_SB_LIT(sb, ",\"input\":" MOCK_TOOL_ARGS "}],\"stop_reason\":\"tool_use\"");
    } else {
        MOCK_SB_LIT(sb, ",\"content\":[{\"type\":\"text\",\"text\":");
        str(sb, a->text, a->text_len);
        MOCK_SB_LIT(sb, "}],\"stop_reason\":\"end_turn\"");
    }
    MOCK_SB_LIT(sb, ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    mock_sb_u64(sb, a->in_tokens);
    MOCK_SB_LIT(sb, ",\"output_tokens\":");
    mock_sb_u64(sb, a->out_tokens);
    MOCK_SB_LIT(sb, "}}");
}

#define EV(sb, name) MOCK_SB_LIT(sb, "event: " name "\ndata: {\"type\":\"" name "\"")

void mock_anthropic_stream(mock_sb_t *sb, const mock_answer_t *a)
{
    EV(sb, "message_start");
    MOCK_SB_LIT(sb, ",\"message\":{\"id\":");
    lit_str(sb, a->id);
    MOCK_SB_LIT(sb, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    str(sb, a->model, a->model_len);
    MOCK_SB_LIT(sb,
                ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    mock_sb_u64(sb, a->in_tokens);
    MOCK_SB_LIT(sb, ",\"output_tokens\":1}}}\n\n");
    EV(sb, "content_block_start");
    if (a->tool) {
        MOCK_SB_LIT(sb, ",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":");
        tool_id(sb, a);
        MOCK_SB_LIT(sb, ",\"name\":");
        str(sb, a->tool, a->tool_len);
        MOCK_SB_LIT(sb, ",\"input\":{}}}\n\n");
    } else {
        MOCK_SB_LIT(sb, ",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    }
    EV(sb, "ping");
    MOCK_SB_LIT(sb, "}\n\n");
    for (int k = 0; k < a->pieces; k++) {
        const char *p;
        size_t n;
        piece(a, k, &p, &n);
        EV(sb, "content_block_delta");
        if (a->tool)
            MOCK_SB_LIT(sb, ",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":");
        else
            MOCK_SB_LIT(sb, ",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
        str(sb, p, n);
        MOCK_SB_LIT(sb, "}}\n\n");
    }
    EV(sb, "content_block_stop");
    MOCK_SB_LIT(sb, ",\"index\":0}\n\n");
    EV(sb, "message_delta");
    if (a->tool)
        MOCK_SB_LIT(sb, ",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null}");
    else
        MOCK_SB_LIT(sb, ",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}");
    MOCK_SB_LIT(sb, ",\"usage\":{\"output_tokens\":");
    mock_sb_u64(sb, a->out_tokens);
    MOCK_SB_LIT(sb, "}}\n\n");
    EV(sb, "message_stop");
    MOCK_SB_LIT(sb, "}\n\n");
}

void mock_anthropic_error(mock_sb_t *sb, int status, const char *message)
{
    const char *type = status == 401   ? "authentication_error"
                       : status == 403 ? "permission_error"
                       : status == 404 ? "not_found_error"
                       : status == 413 ? "request_too_large"
                       : status == 429 ? "rate_limit_error"
                       : status == 529 ? "overloaded_error"
                       : status >= 500 ? "api_error"
                                       : "invalid_request_error";
    MOCK_SB_LIT(sb, "{\"type\":\"error\",\"error\":{\"type\":");
    lit_str(sb, type);
    MOCK_SB_LIT(sb, ",\"message\":");
    lit_str(sb, message);
    MOCK_SB_LIT(sb, "}}");
}

/* ------------------------------------------------------------ Responses */

static void item(mock_sb_t *sb, const mock_answer_t *a, int done)
{
    if (a->tool) {
        MOCK_SB_LIT(sb, "{\"type\":\"function_call\",\"id\":\"fc_");
        mock_sb_add(sb, a->id + 5, strlen(a->id + 5));
        MOCK_SB_LIT(sb, "\",\"call_id\":\"call_");
        mock_sb_add(sb, a->id + 5, strlen(a->id + 5));
        MOCK_SB_LIT(sb, "\",\"name\":");
        str(sb, a->tool, a->tool_len);
        MOCK_SB_LIT(sb, ",\"arguments\":");
        if (done)
            str(sb, a->text, a->text_len);
        else
            MOCK_SB_LIT(sb, "\"\"");
    } else {
        MOCK_SB_LIT(sb, "{\"type\":\"message\",\"id\":\"msg_");
        mock_sb_add(sb, a->id + 5, strlen(a->id + 5));
        MOCK_SB_LIT(sb, "\",\"role\":\"assistant\",\"content\":[");
        if (done) {
            MOCK_SB_LIT(sb, "{\"type\":\"output_text\",\"text\":");
            str(sb, a->text, a->text_len);
            MOCK_SB_LIT(sb, ",\"annotations\":[]}");
        }
        MOCK_SB_LIT(sb, "]");
    }
    if (done)
        MOCK_SB_LIT(sb, ",\"status\":\"completed\"}");
    else
        MOCK_SB_LIT(sb, ",\"status\":\"in_progress\"}");
}

static void response(mock_sb_t *sb, const mock_answer_t *a, int done)
{
    MOCK_SB_LIT(sb, "{\"id\":");
    lit_str(sb, a->id);
    MOCK_SB_LIT(sb, ",\"object\":\"response\",\"created_at\":");
    mock_sb_u64(sb, a->created);
    MOCK_SB_LIT(sb, ",\"status\":");
    lit_str(sb, done ? "completed" : "in_progress");
    MOCK_SB_LIT(sb, ",\"model\":");
    str(sb, a->model, a->model_len);
    MOCK_SB_LIT(sb, ",\"output\":[");
    if (done) item(sb, a, 1);
    MOCK_SB_LIT(sb, "],\"parallel_tool_calls\":true,\"tool_choice\":\"auto\",\"tools\":[],\"usage\":");
    if (done) {
        MOCK_SB_LIT(sb, "{\"input_tokens\":");
        mock_sb_u64(sb, a->in_tokens);
        MOCK_SB_LIT(sb, ",\"output_tokens\":");
        mock_sb_u64(sb, a->out_tokens);
        MOCK_SB_LIT(sb, ",\"total_tokens\":");
        mock_sb_u64(sb, a->in_tokens + a->out_tokens);
        MOCK_SB_LIT(sb, "}}");
    } else {
        MOCK_SB_LIT(sb, "null}");
    }
}

void mock_responses_body(mock_sb_t *sb, const mock_answer_t *a)
{
    response(sb, a, 1);
}

#define REV(sb, name, seq)                                                                                   \
    do {                                                                                                     \
        MOCK_SB_LIT(sb, "event: " name "\ndata: {\"type\":\"" name "\",\"sequence_number\":");               \
        mock_sb_u64(sb, (uint64_t)(seq)++);                                                                  \
    } while (0)

static void item_ref(mock_sb_t *sb, const mock_answer_t *a)
{
    MOCK_SB_LIT(sb, ",\"item_id\":\"");
    MOCK_SB_LIT(sb, "msg_");
    mock_sb_add(sb, a->id + 5, strlen(a->id + 5));
    MOCK_SB_LIT(sb, "\",\"output_index\":0");
}

void mock_responses_stream(mock_sb_t *sb, const mock_answer_t *a)
{
    int seq = 0;
    REV(sb, "response.created", seq);
    MOCK_SB_LIT(sb, ",\"response\":");
    response(sb, a, 0);
    MOCK_SB_LIT(sb, "}\n\n");
    REV(sb, "response.output_item.added", seq);
    MOCK_SB_LIT(sb, ",\"output_index\":0,\"item\":");
    item(sb, a, 0);
    MOCK_SB_LIT(sb, "}\n\n");
    if (!a->tool) {
        REV(sb, "response.content_part.added", seq);
        item_ref(sb, a);
        MOCK_SB_LIT(
            sb,
            ",\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}\n\n");
    }
    for (int k = 0; k < a->pieces; k++) {
        const char *p;
        size_t n;
        piece(a, k, &p, &n);
        if (a->tool) {
            REV(sb, "response.function_call_arguments.delta", seq);
            item_ref(sb, a);
        } else {
            REV(sb, "response.output_text.delta", seq);
            item_ref(sb, a);
            MOCK_SB_LIT(sb, ",\"content_index\":0");
        }
        MOCK_SB_LIT(sb, ",\"delta\":");
        str(sb, p, n);
        MOCK_SB_LIT(sb, "}\n\n");
    }
    if (a->tool) {
        REV(sb, "response.function_call_arguments.done", seq);
        item_ref(sb, a);
        MOCK_SB_LIT(sb, ",\"arguments\":");
    } else {
        REV(sb, "response.output_text.done", seq);
        item_ref(sb, a);
        MOCK_SB_LIT(sb, ",\"content_index\":0,\"text\":");
    }
    str(sb, a->text, a->text_len);
    MOCK_SB_LIT(sb, "}\n\n");
    REV(sb, "response.output_item.done", seq);
    MOCK_SB_LIT(sb, ",\"output_index\":0,\"item\":");
    item(sb, a, 1);
    MOCK_SB_LIT(sb, "}\n\n");
    REV(sb, "response.completed", seq);
    MOCK_SB_LIT(sb, ",\"response\":");
    response(sb, a, 1);
    MOCK_SB_LIT(sb, "}\n\n");
}
