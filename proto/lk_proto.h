/*  lk_proto - every message between lumkey-edge and the workers.
 *
 *  One ZeroMQ frame per message (after the ROUTER identity frame on the
 *  worker side), msgpack-encoded. Only this module knows the msgpack layout;
 *  services see the typed structs below. The written specs are in
 *  proto/ next to this codec (README.md and one page per service).
 *
 *  Decoding is zero-copy: every lk_str_t in a decoded message points into the
 *  buffer that was decoded, so that buffer must outlive the struct. Messages
 *  that carry secrets (marked SECRET) must be encoded into a secure lk_buf_t
 *  and the received frame wiped with sodium_memzero after use.
 *
 *  Every message carries an envelope: protocol version, type, request id,
 *  call id (chosen by the edge, echoed in the reply to correlate) and a
 *  deadline (unix ms; a worker drops a request whose deadline has passed).
 */
#ifndef LK_PROTO_H
#define LK_PROTO_H

#include <stdint.h>

#include "lk_buf.h"
#include "lk_str.h"

#define LK_PROTO_VERSION    1
#define LK_PROTO_MAX_LIST   32 /* max entries in any string list */
#define LK_PROTO_MAX_RID    64 /* max request id length accepted */
#define LK_PROTO_HASH_LEN   32 /* keyed BLAKE2b of a key */
#define LK_PROTO_DIGEST_LEN 32 /* request digest */

typedef enum {
    LK_MSG_NONE = 0,
    /* any service */
    LK_MSG_PING = 1,  /* edge -> worker: health check */
    LK_MSG_PONG = 2,  /* worker -> edge */
    LK_MSG_ERROR = 3, /* worker -> edge: any request failed */
    /* vault */
    LK_MSG_KEY_HASH = 10, /* edge -> vault: keyed hash of a presented key (SECRET) */
    LK_MSG_KEY_HASH_REP = 11,
    LK_MSG_CRED_GET = 12,     /* edge -> vault: decrypt the credential of a route */
    LK_MSG_CRED_GET_REP = 13, /* SECRET */
    LK_MSG_ADMIN_AUTH = 14,   /* edge -> vault: check an admin token (SECRET) */
    LK_MSG_ADMIN_AUTH_REP = 15,
    /* admin operations, routed by the edge to the owning service by op name */
    LK_MSG_ADMIN_REQ = 20, /* edge -> worker (may be SECRET: provider secret on create) */
    LK_MSG_ADMIN_REP = 21, /* worker -> edge (may be SECRET: key shown once on create) */
    /* policy */
    LK_MSG_DECIDE = 30, /* edge -> policy: authenticate + decide */
    LK_MSG_DECIDE_REP = 31,
    LK_MSG_POLICY_GET = 32, /* edge -> policy: one policy version's document (answer-side rules) */
    LK_MSG_POLICY_GET_REP = 33,
    LK_MSG_SETTLE = 34, /* edge -> policy: a finished request's real usage, for its budget reservation */
    LK_MSG_SETTLE_REP = 35,
    /* approval */
    LK_MSG_HOLD = 40, /* edge -> approval: open or join a hold */
    LK_MSG_HOLD_REP = 41,
    LK_MSG_HOLD_WAIT = 42, /* edge -> approval: poll a hold's outcome (about every 500 ms) */
    LK_MSG_HOLD_WAIT_REP = 43,
    /* audit */
    LK_MSG_AUDIT = 50, /* edge -> audit: record one event */
    LK_MSG_AUDIT_REP = 51,
} lk_msg_type_t;

/* Outcome codes carried by ERROR, ADMIN_REP and DECIDE_REP. */
typedef enum {
    LK_ST_OK = 0,
    LK_ST_BAD_REQUEST = 1,  /* malformed or invalid input (HTTP 400) */
    LK_ST_UNAUTHORIZED = 2, /* key/token unknown, revoked or expired (401) */
    LK_ST_FORBIDDEN = 3,    /* authenticated but not allowed (403) */
    LK_ST_NOT_FOUND = 4,    /* no such model / route / object (404) */
    LK_ST_CONFLICT = 5,     /* already exists (409) */
    LK_ST_UNAVAILABLE = 6,  /* sealed, database down: retry later (503) */
    LK_ST_INTERNAL = 7,     /* bug or unexpected failure (500) */
    LK_ST_INTEGRITY = 8,    /* stored ciphertext failed to authenticate: tampered or moved (500, audited) */
    LK_ST_RATE_LIMITED = 9, /* a rate limit or budget of the key or team is used up (429) */
} lk_status_t;

typedef struct {
    uint32_t version; /* LK_PROTO_VERSION */
    lk_msg_type_t type;
    lk_str_t rid;        /* request id, <= LK_PROTO_MAX_RID bytes */
    uint64_t call_id;    /* echoed in the reply */
    int64_t deadline_ms; /* unix ms; 0 = none */
} lk_envelope_t;

/* --- generic ------------------------------------------------------------ */
typedef struct {
    lk_str_t service; /* "policy", "vault", ... (PONG only) */
} lk_ping_t;

typedef struct {
    lk_status_t status;
    lk_str_t message; /* safe to show to a client: never a secret */
} lk_error_t;

/* --- vault ---------------------------------------------------------------- */
typedef struct {
    lk_str_t key; /* SECRET: the presented key, already format-checked */
} lk_key_hash_t;

typedef struct {
    uint8_t hash[LK_PROTO_HASH_LEN];
} lk_key_hash_rep_t;

typedef struct {
    lk_str_t tenant;
    lk_str_t cred_id;
} lk_cred_get_t;

typedef struct {
    lk_str_t secret; /* SECRET: the provider credential, plaintext */
} lk_cred_get_rep_t;

typedef struct {
    lk_str_t token; /* SECRET: the presented admin token */
} lk_admin_auth_t;

typedef struct {
    lk_str_t tenant;
    lk_str_t role;     /* "admin", "approver", "auditor", "scim" */
    lk_str_t token_id; /* the actor: admin token id, or the SSO user id ("usr_...") for a session */
    /* an SSO session (token "lks_..."; issue 11): empty / 0 for admin tokens */
    lk_str_t via;        /* "session" (empty: an admin token) */
    lk_str_t session_id; /* "ses_..." */
    lk_str_t user_name, display_name, email;
    lk_str_t csrf;      /* the session's CSRF token (compared by the edge) */
    int64_t expires_ms; /* absolute expiry of the session */
} lk_admin_auth_rep_t;

/* An admin operation. The edge authenticated the caller (ADMIN_AUTH) and
 * routes by op: "keys.*" and "providers.*" to vault, "policies.*" to policy,
 * "holds.*" to approval, "audit.*" to audit. */
typedef struct {
    lk_str_t op;        /* e.g. "keys.create", "keys.list", "providers.create" */
    lk_str_t tenant;    /* the caller's tenant */
    lk_str_t actor;     /* admin token id of the caller */
    lk_str_t role;      /* the caller's role */
    lk_str_t object_id; /* path id for get/update/delete ops, else empty */
    lk_str_t json;      /* request body (JSON text), may be empty. May be SECRET */
} lk_admin_req_t;

typedef struct {
    lk_status_t status;
    lk_str_t json; /* response body (JSON text). May be SECRET (key shown once) */
} lk_admin_rep_t;

/* --- policy --------------------------------------------------------------- */
typedef enum {
    LK_DECISION_ALLOW = 1,
    LK_DECISION_BLOCK = 2,
    LK_DECISION_HOLD = 3,
    LK_DECISION_LOG = 4,    /* dry run: would-be decision recorded, request allowed */
    LK_DECISION_REDACT = 5, /* forward the rewritten body (DECIDE_REP body) instead of the client's */
} lk_decision_t;

typedef struct {
    uint8_t key_hash[LK_PROTO_HASH_LEN];
    lk_str_t key_id;   /* public id from the key format ("key_...") */
    lk_str_t endpoint; /* "chat.completions", "messages", ... */
    lk_str_t model;    /* as requested */
    int stream;        /* 0/1 */
    lk_str_t source_ip;
    lk_str_t body; /* the full request body (JSON text) */
    lk_str_t
        headers; /* request headers policies may read: "name: value\n" lines, names lower-case, no auth */
} lk_decide_t;

typedef struct {
    lk_status_t status;  /* OK: see decision. UNAUTHORIZED / NOT_FOUND / ... : refuse */
    lk_str_t error_code; /* machine code: "invalid_api_key", "key_revoked", "model_not_found", ... */
    lk_str_t message;    /* safe for the client */
    lk_decision_t decision;
    /* identity */
    lk_str_t tenant;
    lk_str_t key_id;
    lk_str_t user;
    /* route */
    lk_str_t provider_id;
    lk_str_t provider_kind; /* "openai", "anthropic", "openai-compatible" */
    lk_str_t base_url;      /* from the admin allowlist, never from the client */
    lk_str_t cred_id;
    lk_str_t upstream_model;
    /* fallback route (issue 7): tried on upstream 5xx, connection failure or
     * timeout before any byte reached the client; empty: none */
    lk_str_t provider_id2;
    lk_str_t provider_kind2;
    lk_str_t base_url2;
    lk_str_t cred_id2;
    lk_str_t upstream_model2;
    /* DECIDE with endpoint "models": JSON array text of the model ids the key may use */
    lk_str_t models;
    /* which policy decided */
    lk_str_t policy_id;
    int64_t policy_version;
    lk_str_t rule_id;
    lk_str_t body;        /* REDACT: the body to forward instead of the client's */
    lk_decision_t would;  /* the would-be decision including dry-run rules (0: same as decision) */
    int answer_rules;     /* the policy inspects answers: fetch it (POLICY_GET) and filter the answer */
    lk_str_t agent;       /* identity: the key's agent (metadata) */
    lk_str_t team;        /* identity: the key's team (metadata) */
    int reserved;         /* a budget reservation was made: SETTLE when the request ends */
    int64_t est_microusd; /* estimated maximum cost, -1 unknown */
    int priced;           /* the policy has a price for the model: */
    int64_t price_in;     /*   micro-USD per million input tokens */
    int64_t price_out;    /*   micro-USD per million output tokens */
    /* issue 10: raw JSON objects recorded in the request's audit events (empty: none) */
    lk_str_t anomaly; /* the anomaly score:
                         {"score":0.12,"reasons":[{"k":"rate","c":0.4,...}],"cold":false,"n":42} */
    lk_str_t hdp;     /* the verified HDP provenance result (lk-hdp); empty when no token */
} lk_decide_rep_t;

typedef struct {
    lk_str_t tenant;
    lk_str_t policy_id;
    int64_t policy_version;
} lk_policy_get_t;

typedef struct {
    lk_str_t document; /* the policy document (JSON text) of exactly that version */
} lk_policy_get_rep_t;

/* The request (envelope rid) ended; settle its reservation to the real usage. */
typedef struct {
    lk_str_t tenant;
    int64_t prompt_tokens;     /* -1 unknown: the reservation stays as it was */
    int64_t completion_tokens; /* -1 unknown */
} lk_settle_t;

typedef struct {
    int64_t microusd; /* the settled cost, -1 unknown */
} lk_settle_rep_t;

/* --- approval --------------------------------------------------------------- */
typedef enum {
    LK_HOLD_NO_HOLD = 1, /* nothing to hold: go on */
    LK_HOLD_APPROVED = 2,
    LK_HOLD_REJECTED = 3,
    LK_HOLD_TIMED_OUT = 4, /* deny: nobody decided in time (or the hold was abandoned) */
    LK_HOLD_PENDING = 5,   /* not decided yet: poll with HOLD_WAIT until exp */
} lk_hold_outcome_t;

typedef struct {
    lk_str_t tenant;
    lk_str_t key_id;
    uint8_t digest[LK_PROTO_DIGEST_LEN]; /* digest of the canonical request */
    lk_str_t policy_id;
    int64_t policy_version;
    lk_str_t rule_id;
    lk_str_t reason;
    int64_t timeout_ms;
    lk_str_t kind;    /* "request" (default when empty) or "answer" (a model answer's tool call) */
    lk_str_t user;    /* the key's user: may not approve their own request */
    lk_str_t agent;   /* the calling agent, shown to approvers */
    lk_str_t model;   /* the requested model, shown to approvers */
    lk_str_t tool;    /* kind "answer": the held tool call's name */
    lk_str_t excerpt; /* short excerpt shown to approvers, already redacted by the edge (redacted again) */
} lk_hold_t;

typedef struct {
    lk_hold_outcome_t outcome;
    lk_str_t hold_id;
    lk_str_t approver; /* who decided: "adm_...", "slack:U...", "link" (audited by the edge) */
    lk_str_t reason;
    int64_t expires_ms; /* unix ms when the hold times out (PENDING); 0 if n/a */
} lk_hold_rep_t;

/* HOLD_WAIT: the outcome of an open hold; the reply is a HOLD_WAIT_REP with
 * the lk_hold_rep_t shape. Every poll also says "the waiter is alive". */
typedef struct {
    lk_str_t tenant;
    lk_str_t hold_id;
} lk_hold_wait_t;

/* --- audit ------------------------------------------------------------------ */
typedef struct {
    lk_str_t event_id; /* UUID, derived from rid + kind so retries de-duplicate */
    lk_str_t kind;     /* "request.accepted", "request.completed", "request.denied" */
    int64_t time_ms;
    lk_str_t tenant; /* empty if the key was not authenticated */
    lk_str_t key_id;
    lk_str_t user;
    lk_str_t source_ip;
    lk_str_t endpoint;
    lk_str_t provider_id;
    lk_str_t model; /* as requested */
    lk_str_t upstream_model;
    lk_str_t decision; /* "allow", "block", "hold", "log", "error" */
    lk_str_t policy_id;
    int64_t policy_version;
    lk_str_t rule_id;
    int64_t http_status;     /* what the client got (0 if not yet answered) */
    int64_t upstream_status; /* 0 if the provider was not called */
    int64_t latency_us;      /* from request arrival to the last byte, 0 if n/a */
    int64_t prompt_tokens;   /* -1 if unknown */
    int64_t completion_tokens;
    int64_t total_tokens;
    lk_str_t error_code; /* machine code when the request failed, else empty */
    lk_str_t trace_id;   /* from traceparent, if any */
    int stream;
    lk_str_t agent;        /* User-Agent of the caller */
    lk_str_t approver;     /* who approved / rejected a held request */
    int64_t cost_micros;   /* cost in millionths of a dollar; 0 = unknown */
    lk_str_t request_sha;  /* hex SHA-256 of the request body (64 chars) */
    lk_str_t answer_sha;   /* hex SHA-256 of the answer body as relayed */
    lk_str_t request_body; /* content: stored only if the tenant's setting asks */
    lk_str_t answer_body;
    /* fallback (issue 7): the second route, set only when it was used */
    lk_str_t provider_id2;
    lk_str_t upstream_model2;
    /* issue 10: copied from DECIDE_REP (JSON object text; empty: NULL) */
    lk_str_t anomaly;
    lk_str_t hdp;
} lk_audit_t;

typedef struct {
    int64_t seq;   /* the stored event's sequence number */
    int fail_open; /* the event's tenant chose fail-open (the edge remembers it) */
} lk_audit_rep_t;

/* --- one decoded or to-be-encoded message ------------------------------------ */
typedef struct {
    lk_envelope_t env;
    union {
        lk_ping_t ping;   /* PING, PONG */
        lk_error_t error; /* ERROR */
        lk_key_hash_t key_hash;
        lk_key_hash_rep_t key_hash_rep;
        lk_cred_get_t cred_get;
        lk_cred_get_rep_t cred_get_rep;
        lk_admin_auth_t admin_auth;
        lk_admin_auth_rep_t admin_auth_rep;
        lk_admin_req_t admin_req;
        lk_admin_rep_t admin_rep;
        lk_decide_t decide;
        lk_decide_rep_t decide_rep;
        lk_policy_get_t policy_get;
        lk_policy_get_rep_t policy_get_rep;
        lk_settle_t settle;
        lk_settle_rep_t settle_rep;
        lk_hold_t hold;
        lk_hold_rep_t hold_rep; /* HOLD_REP and HOLD_WAIT_REP */
        lk_hold_wait_t hold_wait;
        lk_audit_t audit;
        lk_audit_rep_t audit_rep;
    } u;
} lk_msg_t;

/* Appends the encoding of msg to out (use a secure out for SECRET messages).
 * 0 / -1 (unknown type, field too long, out of memory). */
int lk_proto_encode(const lk_msg_t *msg, lk_buf_t *out) __attribute__((warn_unused_result));

/* Decodes buf[0..len) into msg; lk_str_t fields borrow from buf. Missing
 * optional fields decode as empty / 0. 0 on success, -1 on anything malformed
 * (truncated, trailing bytes, wrong types, unknown type, oversize lists,
 * wrong version). Never reads past len, never aborts. */
int lk_proto_decode(const uint8_t *buf, size_t len, lk_msg_t *msg) __attribute__((warn_unused_result));

/* Convenience: fill env of a reply from the request's envelope (same rid, call id, deadline). */
void lk_proto_reply_env(lk_msg_t *reply, const lk_msg_t *req, lk_msg_type_t type);

/* Whether messages of this type carry a secret (encode into a secure lk_buf_t,
 * wipe the received frame). 0 for unknown types. */
int lk_proto_is_secret(lk_msg_type_t type);

/* Names for logs and specs ("DECIDE", ...); "UNKNOWN" if out of range. */
const char *lk_proto_type_name(lk_msg_type_t type);
const char *lk_status_name(lk_status_t st);

#endif
