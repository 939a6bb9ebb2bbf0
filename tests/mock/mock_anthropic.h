/*  mock_anthropic - Anthropic Messages and OpenAI Responses bodies for lumkey-mock.
 *
 *  One answer (mock_answer_t: a text cut into pieces, or a tool call whose
 *  JSON arguments arrive in pieces) written either as one JSON body or as the
 *  whole typed SSE stream of the API:
 *    Anthropic: message_start, content_block_start, ping, content_block_delta
 *    (text_delta | input_json_delta) x N, content_block_stop, message_delta
 *    (stop_reason, usage), message_stop.
 *    Responses: response.created, response.output_item.added,
 *    [response.content_part.added], response.output_text.delta |
 *    response.function_call_arguments.delta x N, the .done events,
 *    response.completed (usage). Every event carries sequence_number.
 *  Knows nothing of HTTP or directives.
 */
#ifndef MOCK_ANTHROPIC_H
#define MOCK_ANTHROPIC_H

#include <stddef.h>
#include <stdint.h>

#include "mock_sb.h"

typedef struct {
    char id[48];
    const char *model;
    size_t model_len;
    const char *text; /* the text, or the tool arguments */
    size_t text_len;
    const char *tool; /* NULL: a text answer */
    size_t tool_len;
    int pieces;
    uint64_t created, in_tokens, out_tokens;
} mock_answer_t;

/* Fills a with the canned words (pieces of them) or a tool call (MOCK_TOOL_ARGS). */
void mock_answer_init(mock_answer_t *a, h2o_mem_pool_t *pool, const char *prefix, uint64_t uid,
                      uint64_t created, const char *model, size_t model_len, const char *tool,
                      size_t tool_len, int pieces, size_t request_bytes);

void mock_anthropic_body(mock_sb_t *sb, const mock_answer_t *a);
void mock_anthropic_stream(mock_sb_t *sb, const mock_answer_t *a);
/* {"type":"error","error":{"type","message"}} with the type for status. */
void mock_anthropic_error(mock_sb_t *sb, int status, const char *message);

void mock_responses_body(mock_sb_t *sb, const mock_answer_t *a);
void mock_responses_stream(mock_sb_t *sb, const mock_answer_t *a);

#endif
