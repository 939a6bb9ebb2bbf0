/*  lk_policy - compile a policy document and evaluate it on one request, on a
 *  whole answer, or on a streamed answer event by event.
 *
 *  Pure library: no sockets, no database, no HTTP. Linked by lumkey-policy
 *  (request side, budgets' cost estimates) and lumkey-edge (answer side), and
 *  by lumkeyctl (validate / test without any provider). The document format,
 *  the combination rule and the stream hold-back window are specified in
 *  docs/policy.md.
 *
 *  A compiled policy is immutable and may be shared read-only between
 *  threads; evaluation state lives in the caller's result or stream object.
 */
#ifndef LK_POLICY_H
#define LK_POLICY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lk_policy lk_policy_t;
typedef struct lk_policy_stream lk_policy_stream_t;

/* Which wire API a body is in. */
typedef enum {
    LK_API_CHAT = 1,      /* OpenAI POST /v1/chat/completions */
    LK_API_MESSAGES = 2,  /* Anthropic POST /v1/messages */
    LK_API_RESPONSES = 3, /* OpenAI POST /v1/responses */
    LK_API_EMBEDDINGS = 4 /* OpenAI POST /v1/embeddings (input text only; no answer side) */
} lk_api_t;

/* Actions, ordered by restrictiveness: when several rules match, the most
 * restrictive enforced action wins (BLOCK > HOLD > REDACT > LOG > ALLOW);
 * among equals, the first rule in document order. */
typedef enum {
    LK_ACT_ALLOW = 0,
    LK_ACT_LOG = 1,    /* record only; also what a dry-run rule yields */
    LK_ACT_REDACT = 2, /* mask the matched spans, forward the rest */
    LK_ACT_HOLD = 3,   /* wait for a human (approval worker) */
    LK_ACT_BLOCK = 4
} lk_action_t;

/* Why a document was refused: the JSON path of the offending field
 * ("rules[2].when.prompt.regex[0]") and, for syntax errors, the line and
 * column; msg says what is wrong. Never contains more than a short excerpt of
 * the document. */
typedef struct {
    char path[160];
    int line, column; /* 1-based; 0 when not a syntax error */
    char msg[256];
} lk_policy_error_t;

/* Compiles a policy document (JSON text, need not be NUL-terminated). NULL and
 * *err filled when the document is invalid (or out of memory). An invalid
 * document can never be evaluated. */
lk_policy_t *lk_policy_compile(const char *doc, size_t len, lk_policy_error_t *err);
/* NULL-safe; nullifies *p. */
void lk_policy_free(lk_policy_t **p);

/* What the document says outside its rules. Budgets and rate limits are
 * enforced by lumkey-policy against PostgreSQL; the library only parses them.
 * 0 = no limit. */
typedef struct {
    int64_t requests_per_minute;
    int64_t tokens_per_minute;
    int64_t microusd_per_day; /* spend limits in millionths of a USD */
    int64_t microusd_per_month;
    int per_team; /* 1: counters are shared by the key's team, 0: per key */
} lk_policy_limits_t;
void lk_policy_limits(const lk_policy_t *p, lk_policy_limits_t *out);
/* The price of model from the document's price table (first matching glob in
 * document order): 1 and USD per million input / output tokens, or 0 when no
 * entry matches. */
int lk_policy_price(const lk_policy_t *p, const char *model, double *in_per_mtok, double *out_per_mtok);
/* 1 if any rule applies to answers (the edge then inspects the answer). */
int lk_policy_has_answer_rules(const lk_policy_t *p);

/* The HDP (Human Delegation Provenance) verification of the request, for the
 * opt-in `hdp` condition (docs/hdp.md). reason: "ok", "bad_signature", ... */
typedef struct {
    int present;        /* an HDP-Token / HDP-Token-Ref header was sent */
    int verified;       /* the token verified against a trusted issuer of the tenant */
    int scope_mismatch; /* a tool outside the token's scope.authorized_tools */
    const char *reason;
} lk_policy_hdp_t;

/* Who is asking: from the key's record and the request headers. Any field may
 * be NULL. headers: n_headers (name, value) pairs, names lower-case. */
typedef struct {
    lk_api_t api;
    const char *provider_id;   /* "prov_..." */
    const char *provider_kind; /* "openai", "anthropic", "openai-compatible" */
    const char *key_id;
    const char *user;
    const char *agent;
    const char *team;
    const char *const (*headers)[2];
    size_t n_headers;
    const lk_policy_hdp_t *hdp; /* NULL: no HDP header (nothing verified) */
    /* the request's anomaly score (issue 10), computed by lumkey-policy before evaluation; a rule's
     * `anomaly` condition never matches without it (answer side, lumkeyctl without a test score) */
    int has_anomaly;
    double anomaly_score;     /* [0, 1] */
    unsigned anomaly_reasons; /* bit per lk_policy_anomaly_reason() of the top reasons */
} lk_policy_ctx_t;

/* The bit of an anomaly reason name ("rate", "tokens", "spend", "prompt_len", "model", "tool", "ip",
 * "hour", "block_rate", "error_rate"), 0 for an unknown name. */
unsigned lk_policy_anomaly_reason(const char *name);

/* The outcome of one evaluation. Filled by the eval functions; release with
 * lk_policy_result_clear. */
typedef struct {
    lk_action_t action; /* enforced: what the caller must do */
    lk_action_t would;  /* the most restrictive action including dry-run rules (>= action) */
    char rule_id[64];   /* rule behind `action` (or behind `would` if action is ALLOW/LOG); "" if none */
    char message[256];  /* block message or hold reason from the rule; safe for the client */
    int redactions;     /* spans masked */
    char *body;         /* action REDACT: the rewritten body (valid JSON, malloc'd, NUL-terminated) */
    size_t body_len;
    int64_t est_prompt_tokens; /* request side: estimated input tokens */
    int64_t est_max_tokens; /* request side: max output tokens (the request's limit, or the model default) */
    int64_t est_microusd;   /* request side: maximum cost from the price table; -1 = no price known */
} lk_policy_result_t;
void lk_policy_result_clear(lk_policy_result_t *r);

/* Request side. model: as requested (also read from the body when NULL).
 * 0 on success; -1 when the body is not a valid request of ctx->api (r->message
 * says why; the caller answers 400). */
int lk_policy_eval_request(const lk_policy_t *p, const lk_policy_ctx_t *ctx, const char *body, size_t len,
                           lk_policy_result_t *r);

/* Answer side, whole (non-streamed) answer body. Same return convention. */
int lk_policy_eval_answer(const lk_policy_t *p, const lk_policy_ctx_t *ctx, const char *body, size_t len,
                          lk_policy_result_t *r);
/* The same, on an answer the caller has already parsed (the edge parses each
 * answer once, for its usage and for policy). root is read, and may be
 * modified by redaction: the caller uses r->body, then json_decref(root). */
int lk_policy_eval_answer_json(const lk_policy_t *p, const lk_policy_ctx_t *ctx, json_t *root,
                               lk_policy_result_t *r);

/* Answer side, streamed. Feed every SSE event in order (event name may be
 * NULL/empty; data is the event's data field without the trailing newline).
 * The stream calls emit for each event the client may receive, in order,
 * possibly rewritten (redaction), delayed (hold-back window, buffered tool-call
 * deltas) or merged. When a rule blocks, emit receives one error event in the
 * API's own shape and the feed returns LK_PSTREAM_BLOCKED; nothing more may be
 * sent. Events that are not JSON (e.g. "[DONE]") pass through in order. */
typedef void (*lk_policy_emit_fn)(void *ud, const char *event, size_t event_len, const char *data,
                                  size_t data_len);
enum { LK_PSTREAM_OK = 0, LK_PSTREAM_BLOCKED = 1, LK_PSTREAM_HOLD = 2, LK_PSTREAM_ERROR = -1 };
lk_policy_stream_t *lk_policy_stream_new(const lk_policy_t *p, const lk_policy_ctx_t *ctx,
                                         lk_policy_emit_fn emit, void *ud);
int lk_policy_stream_feed(lk_policy_stream_t *s, const char *event, size_t event_len, const char *data,
                          size_t data_len);
/* End of the upstream stream: flushes what the window still holds. */
int lk_policy_stream_finish(lk_policy_stream_t *s);
/* The result so far (action, rule, redaction count). Valid until free. */
const lk_policy_result_t *lk_policy_stream_result(const lk_policy_stream_t *s);
void lk_policy_stream_free(lk_policy_stream_t **s);

/* After LK_PSTREAM_HOLD (a rule holds a tool call, or the answer text):
 * the held call stays buffered and the stream is paused; the caller keeps
 * the events that arrive meanwhile, including the one that returned HOLD.
 * held_call: the held tool call's name and its raw arguments (NULL if the
 * hold is on the text). resume(approved): emits the held call and continues
 * (the caller then feeds the kept events again, the one that returned HOLD
 * first); resume(rejected): emits one error event in the API's shape with
 * the reviewer's reason and returns LK_PSTREAM_BLOCKED. */
const char *lk_policy_stream_held_call(const lk_policy_stream_t *s, const char **args, size_t *args_len);
int lk_policy_stream_resume(lk_policy_stream_t *s, int approved, const char *reason);

/* The hold-back window in bytes of answer text (documented in docs/policy.md). */
#define LK_POLICY_STREAM_WINDOW 256

const char *lk_policy_action_name(lk_action_t a);

/* The tool names a request body of api offers (tool definitions: is_call 0)
 * and carries as calls in its conversation (is_call 1), in order, through cb.
 * 0, or -1 when the body is not a valid request of api. (HDP scope check.) */
int lk_policy_request_tools(lk_api_t api, const char *body, size_t len,
                            void (*cb)(void *ud, const char *name, int is_call), void *ud);

/* --- shared JSON shapes (policy_json.c) ------------------------------------ */

/* "chat.completions", "messages", "responses", "embeddings" <-> lk_api_t;
 * lk_policy_api_of answers 0 for anything else. */
lk_api_t lk_policy_api_of(const char *endpoint);
const char *lk_policy_api_name(lk_api_t api);

/* A test context given as JSON ({provider_id, provider, key_id, user, agent,
 * team, headers: {name: value}}); ctx borrows from cx and headers. */
#define LK_POLICY_CTX_MAX_HEADERS 32
void lk_policy_ctx_from_json(const json_t *cx, lk_api_t api, lk_policy_ctx_t *ctx,
                             const char *headers[LK_POLICY_CTX_MAX_HEADERS][2]);

/* One side's decision: {side, action, would, rule, message, redactions, body?, estimates?}. */
json_t *lk_policy_result_json(const lk_policy_result_t *r,
                              int answer_side); /* "allow", "log", "redact", "hold", "block" */

#endif
