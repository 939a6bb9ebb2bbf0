/*  policy_view - the normalized view of a request or answer body, one for every
 *  API: model, the strings the policy reads (system prompt, message texts, tool
 *  call arguments), tool definitions and tool calls, max output tokens.
 *
 *  The view borrows the parsed body: redaction rewrites its strings in place.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

#define GROW(arr, n, cap)                                                                                    \
    do {                                                                                                     \
        if ((n) == (cap)) {                                                                                  \
            size_t nc_ = (cap) ? (cap)*2 : 8;                                                                \
            void *np_ = realloc((arr), nc_ * sizeof *(arr));                                                 \
            if (!np_) return -1;                                                                             \
            (arr) = np_;                                                                                     \
            (cap) = nc_;                                                                                     \
        }                                                                                                    \
    } while (0)

static int add_item(view_t *v, json_t *s)
{
    if (!json_is_string(s)) return 0;
    GROW(v->items, v->n_items, v->cap_items);
    v->items[v->n_items++] = (vitem_t){.str = s};
    v->text_bytes += json_string_length(s);
    return 0;
}

static int add_def(view_t *v, json_t *name)
{
    if (!json_is_string(name)) return 0;
    GROW(v->defs, v->n_defs, v->cap_defs);
    v->defs[v->n_defs++] = json_string_value(name);
    return 0;
}

/* Every string inside a JSON value (Anthropic tool_use input), depth-limited. */
static int add_strings(view_t *v, json_t *j, int depth)
{
    if (depth > 64) return 0;
    if (json_is_string(j)) return add_item(v, j);
    size_t i;
    json_t *e;
    const char *k;
    if (json_is_array(j)) json_array_foreach(j, i, e)
        {
            if (add_strings(v, e, depth + 1)) return -1;
        }
    if (json_is_object(j)) json_object_foreach(j, k, e)
        {
            if (add_strings(v, e, depth + 1)) return -1;
        }
    return 0;
}

/* A tool call: name + arguments (a JSON string to parse, or an object). */
static int add_call(view_t *v, json_t *name, json_t *args)
{
    GROW(v->calls, v->n_calls, v->cap_calls);
    vcall_t *c = &v->calls[v->n_calls++];
    *c = (vcall_t){.name = json_is_string(name) ? json_string_value(name) : ""};
    if (json_is_string(args)) {
        if (add_item(v, args)) return -1;
        c->args = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, NULL);
        c->owned = c->args != NULL;
    } else if (args) {
        c->args = args;
        if (add_strings(v, args, 0)) return -1;
    }
    return 0;
}

/* content: a string, or an array of parts/blocks. */
static int add_content(view_t *v, json_t *content)
{
    if (json_is_string(content)) return add_item(v, content);
    if (!json_is_array(content)) return 0;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (json_is_string(b)) {
            if (add_item(v, b)) return -1;
            continue;
        }
        const char *type = json_string_value(json_object_get(b, "type"));
        if (!type) continue;
        if (!strcmp(type, "text") || !strcmp(type, "input_text") || !strcmp(type, "output_text")) {
            if (add_item(v, json_object_get(b, "text"))) return -1;
        } else if (!strcmp(type, "tool_use")) {
            if (add_call(v, json_object_get(b, "name"), json_object_get(b, "input"))) return -1;
        } else if (!strcmp(type, "tool_result")) {
            if (add_content(v, json_object_get(b, "content"))) return -1;
        } else if (!strcmp(type, "refusal")) {
            if (add_item(v, json_object_get(b, "refusal"))) return -1;
        }
    }
    return 0;
}

static int chat_tool_calls(view_t *v, json_t *tcs)
{
    size_t i;
    json_t *tc;
    json_array_foreach(tcs, i, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        if (json_is_object(fn) && add_call(v, json_object_get(fn, "name"), json_object_get(fn, "arguments")))
            return -1;
    }
    return 0;
}

static int64_t int_field(json_t *o, const char *k)
{
    json_t *x = json_object_get(o, k);
    return json_is_integer(x) && json_integer_value(x) >= 0 ? json_integer_value(x) : -1;
}

#define WHY(...)                                                                                             \
    do {                                                                                                     \
        snprintf(why, whylen, __VA_ARGS__);                                                                  \
        return -1;                                                                                           \
    } while (0)

static int responses_items(view_t *v, json_t *input)
{
    if (json_is_string(input)) return add_item(v, input);
    size_t i;
    json_t *it;
    json_array_foreach(input, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));
        if (type && !strcmp(type, "function_call")) {
            if (add_call(v, json_object_get(it, "name"), json_object_get(it, "arguments"))) return -1;
        } else if (type && !strcmp(type, "function_call_output")) {
            if (add_item(v, json_object_get(it, "output"))) return -1;
        } else if (add_content(v, json_object_get(it, "content"))) {
            return -1;
        }
    }
    return 0;
}

int view_request(view_t *v, lk_api_t api, json_t *root, char *why, size_t whylen)
{
    memset(v, 0, sizeof *v);
    v->root = root;
    v->max_tokens = -1;
    if (!json_is_object(root)) WHY("the request body must be a JSON object");
    json_t *m = json_object_get(root, "model");
    if (m && !json_is_string(m)) WHY("\"model\" must be a string");
    v->model = json_string_value(m);
    size_t i;
    json_t *e;
    switch (api) {
    case LK_API_CHAT: {
        json_t *msgs = json_object_get(root, "messages");
        if (!json_is_array(msgs)) WHY("\"messages\" must be an array");
        json_array_foreach(msgs, i, e)
        {
            if (!json_is_object(e)) WHY("messages[%zu] must be an object", i);
            if (add_content(v, json_object_get(e, "content"))) goto oom;
            json_t *tcs = json_object_get(e, "tool_calls");
            if (json_is_array(tcs) && chat_tool_calls(v, tcs)) goto oom;
        }
        json_array_foreach(json_object_get(root, "tools"), i, e)
        {
            if (add_def(v, json_object_get(json_object_get(e, "function"), "name"))) goto oom;
        }
        v->max_tokens = int_field(root, "max_completion_tokens");
        if (v->max_tokens < 0) v->max_tokens = int_field(root, "max_tokens");
        break;
    }
    case LK_API_MESSAGES: {
        json_t *msgs = json_object_get(root, "messages");
        if (!json_is_array(msgs)) WHY("\"messages\" must be an array");
        if (add_content(v, json_object_get(root, "system"))) goto oom;
        json_array_foreach(msgs, i, e)
        {
            if (!json_is_object(e)) WHY("messages[%zu] must be an object", i);
            if (add_content(v, json_object_get(e, "content"))) goto oom;
        }
        json_array_foreach(json_object_get(root, "tools"), i, e)
        {
            if (add_def(v, json_object_get(e, "name"))) goto oom;
        }
        v->max_tokens = int_field(root, "max_tokens");
        break;
    }
    case LK_API_RESPONSES: {
        json_t *in = json_object_get(root, "input");
        if (!json_is_string(in) && !json_is_array(in)) WHY("\"input\" must be a string or an array");
        if (add_item(v, json_object_get(root, "instructions"))) goto oom;
        if (responses_items(v, in)) goto oom;
        json_array_foreach(json_object_get(root, "tools"), i, e)
        {
            if (add_def(v, json_object_get(e, "name"))) goto oom;
        }
        v->max_tokens = int_field(root, "max_output_tokens");
        break;
    }
    case LK_API_EMBEDDINGS: {
        json_t *in = json_object_get(root, "input");
        if (json_is_string(in)) {
            if (add_item(v, in)) goto oom;
        } else if (json_is_array(in)) {
            json_array_foreach(in, i, e)
            {
                if (add_item(v, e)) goto oom;
            }
        } else {
            WHY("\"input\" must be a string or an array");
        }
        v->max_tokens = 0;
        break;
    }
    default:
        WHY("unknown API");
    }
    return 0;
oom:
    WHY("out of memory");
}

int view_answer(view_t *v, lk_api_t api, json_t *root, char *why, size_t whylen)
{
    memset(v, 0, sizeof *v);
    v->root = root;
    v->max_tokens = -1;
    if (!json_is_object(root)) WHY("the answer body must be a JSON object");
    v->model = json_string_value(json_object_get(root, "model"));
    size_t i;
    json_t *e;
    switch (api) {
    case LK_API_CHAT: {
        json_t *ch = json_object_get(root, "choices");
        if (!json_is_array(ch)) WHY("\"choices\" must be an array");
        json_array_foreach(ch, i, e)
        {
            json_t *msg = json_object_get(e, "message");
            if (!json_is_object(msg)) continue;
            if (add_content(v, json_object_get(msg, "content"))) goto oom;
            if (add_item(v, json_object_get(msg, "refusal"))) goto oom;
            json_t *tcs = json_object_get(msg, "tool_calls");
            if (json_is_array(tcs) && chat_tool_calls(v, tcs)) goto oom;
        }
        break;
    }
    case LK_API_MESSAGES: {
        json_t *c = json_object_get(root, "content");
        if (!json_is_array(c)) WHY("\"content\" must be an array");
        if (add_content(v, c)) goto oom;
        break;
    }
    case LK_API_RESPONSES: {
        json_t *out = json_object_get(root, "output");
        if (!json_is_array(out)) WHY("\"output\" must be an array");
        if (responses_items(v, out)) goto oom;
        break;
    }
    default:
        WHY("no answer side for this API");
    }
    return 0;
oom:
    WHY("out of memory");
}

void view_free(view_t *v)
{
    for (size_t i = 0; i < v->n_calls; i++)
        if (v->calls[i].owned) json_decref(v->calls[i].args);
    free(v->items);
    free(v->defs);
    free(v->calls);
    memset(v, 0, sizeof *v);
}
