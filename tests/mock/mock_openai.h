/*  mock_openai - OpenAI-shaped bodies for lumkey-mock, written into mock_sb.
 *
 *  A chat answer is described once (mock_chat_t: id, model, the full text or
 *  the tool call, where the text is cut into stream pieces) and can then be
 *  written as one chat.completion body or as the sequence of SSE events of
 *  a chat.completion.chunk stream:
 *
 *      event k < mock_chat_nevents(c)   mock_chat_event(sb, c, k)
 *      then                             mock_chat_final(sb, c)   (finish_reason)
 *      then, if include_usage           mock_chat_usage(sb, c)   (choices: [])
 *      then                             MOCK_SSE_DONE
 *
 *  Knows nothing of HTTP, timers or directives.
 */
#ifndef MOCK_OPENAI_H
#define MOCK_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include "mock_sb.h"

#define MOCK_SSE_DONE  "data: [DONE]\n\n"
#define MOCK_TOOL_ARGS "{\"city\":\"Paris\"}"

typedef struct {
    char id[48];      /* "chatcmpl-..." */
    char call_id[48]; /* "call_..." */
    uint64_t created;
    const char *model; /* borrowed (request pool) */
    size_t model_len;
    const char *text; /* the answer text, or the tool arguments; borrowed */
    size_t text_len;
    const char *tool; /* tool name; NULL: a text answer */
    size_t tool_len;
    size_t *cuts; /* pieces + 1 offsets into text */
    int pieces;
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    mock_sb_t prefix; /* 'data: {"id":...,"choices":[' shared by every chunk */
} mock_chat_t;

/* Sets id, call_id and created; model borrowed. prompt_tokens from the request size. */
void mock_chat_init(mock_chat_t *c, h2o_mem_pool_t *pool, uint64_t uid, uint64_t created, const char *model,
                    size_t model_len, size_t request_bytes);
/* Answer text: the canned words, `pieces` of them ("Hello from lumkey-mock" for 3). */
void mock_chat_set_words(mock_chat_t *c, h2o_mem_pool_t *pool, int pieces);
/* Answer text: text[0..n) (borrowed), cut into `pieces` at UTF-8 boundaries. */
void mock_chat_set_text(mock_chat_t *c, h2o_mem_pool_t *pool, const char *text, size_t n, int pieces);
/* Answer text: exactly n bytes of printable filler. */
void mock_chat_set_bytes(mock_chat_t *c, h2o_mem_pool_t *pool, size_t n, int pieces);
/* A tool call to `name` (borrowed) with MOCK_TOOL_ARGS arriving in `pieces` pieces. */
void mock_chat_set_tool(mock_chat_t *c, h2o_mem_pool_t *pool, const char *name, size_t n, int pieces);

void mock_chat_body(mock_sb_t *sb, const mock_chat_t *c);
int mock_chat_nevents(const mock_chat_t *c);
void mock_chat_event(mock_sb_t *sb, const mock_chat_t *c, int k);
void mock_chat_final(mock_sb_t *sb, const mock_chat_t *c);
void mock_chat_usage(mock_sb_t *sb, const mock_chat_t *c);

/* {"error":{"message","type","param","code"}} with type and code chosen from status. */
void mock_openai_error(mock_sb_t *sb, int status, const char *message, const char *param);

/* {"object":"list","data":[n embeddings],"model",...}; base64 selects the encoding_format. */
void mock_openai_embeddings(mock_sb_t *sb, const char *model, size_t model_len, size_t n, int base64,
                            uint64_t prompt_tokens);

/* The fixed GET /v1/models body (static storage). */
extern const char mock_openai_models[];
extern const size_t mock_openai_models_len;

#endif
