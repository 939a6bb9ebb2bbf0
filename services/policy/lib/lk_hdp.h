/*  lk_hdp - verify an HDP (Human Delegation Provenance, IETF draft
 *  draft-helixar-hdp-agentic-delegation) token and compare a request with
 *  its scope.
 *
 *  Pure library: no sockets, no database, no clock (the caller passes now).
 *  The token is the HDP-Token header value: base64url (no padding) of the
 *  token's JSON (raw JSON is accepted too). Signatures are Ed25519 over the
 *  RFC 8785 canonical JSON (JCS) of the root {hdp, header, principal, scope,
 *  chain: []} and, per hop, of [root signature value, hops before it,
 *  this hop without hop_signature]. docs/hdp.md has the format and the steps.
 *
 *  Every input is bounded (LK_HDP_MAX_*): a bad token is a result with a
 *  reason, never a crash. The result JSON never contains the token's
 *  signatures or the full token.
 */
#ifndef LK_HDP_H
#define LK_HDP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define LK_HDP_MAX_HEADER   (48 * 1024) /* bytes of header value */
#define LK_HDP_MAX_HOPS     32          /* hops Lumkey verifies (more: too_many_hops) */
#define LK_HDP_MAX_DEPTH    16          /* JSON nesting */
#define LK_HDP_MAX_TOOLS    256         /* scope.authorized_tools entries */
#define LK_HDP_SUMMARY_HOPS 16          /* hops listed in the result's chain summary */
#define LK_HDP_MAX_SAFE_INT 9007199254740991LL

/* Why a token is not verified ("ok" when it is). */
typedef enum {
    LK_HDP_OK = 0,
    LK_HDP_MALFORMED,           /* not base64url JSON, or not the token schema */
    LK_HDP_TRUNCATED,           /* the value ends before the JSON does */
    LK_HDP_UNSUPPORTED_VERSION, /* hdp / header.version other than "0.1" */
    LK_HDP_UNSUPPORTED_ALG,     /* signature.alg other than Ed25519 */
    LK_HDP_UNKNOWN_ISSUER,      /* signature.kid is none of the tenant's trusted issuers */
    LK_HDP_ISSUER_REVOKED,      /* ... or one that was revoked */
    LK_HDP_ISSUER_UNAVAILABLE,  /* the issuer could not be looked up (database) */
    LK_HDP_BAD_SIGNATURE,       /* the root signature does not verify (tampered, wrong key) */
    LK_HDP_CHAIN_BROKEN,        /* hop seq / parent_hop / timestamps / hop signature */
    LK_HDP_TOO_MANY_HOPS,       /* more hops than scope.max_hops (or LK_HDP_MAX_HOPS) */
    LK_HDP_EXPIRED,             /* header.expires_at (ms) is in the past */
    LK_HDP_UNRESOLVED_REF,      /* HDP-Token-Ref names no token this worker has seen */
} lk_hdp_reason_t;

const char *lk_hdp_reason_name(lk_hdp_reason_t r);

/* A trusted issuer, as the caller's lookup answers it. */
typedef struct {
    char name[128];
    unsigned char pk[32]; /* Ed25519 public key */
    int revoked;
} lk_hdp_issuer_t;

/* Finds the issuer of key id kid: 1 found (*out filled), 0 unknown, -1 lookup failed. */
typedef int (*lk_hdp_issuer_fn)(void *ud, const char *kid, lk_hdp_issuer_t *out);

/* The request's tool names, for the scope comparison (either list may be empty). */
typedef struct {
    const char *const *defs; /* tool definitions offered to the model */
    size_t n_defs;
    const char *const *calls; /* tool calls in the conversation */
    size_t n_calls;
} lk_hdp_tools_t;

/* What a policy condition may read (lk_policy_ctx_t.hdp). */
typedef struct {
    int present;        /* an HDP-Token or HDP-Token-Ref header was sent */
    int verified;       /* reason == LK_HDP_OK */
    int scope_mismatch; /* a tool outside scope.authorized_tools */
    lk_hdp_reason_t reason;
} lk_hdp_facts_t;

/* Verifies the header value and compares tools with the scope. Returns the
 * result object (see docs/hdp.md: present, verified, reason, detail,
 * token_id, session, principal, issuer, hops, chain, scope, mismatches) and
 * fills *facts; NULL only when out of memory. now_ms: Unix time in ms. */
json_t *lk_hdp_verify(const char *value, size_t len, int64_t now_ms, lk_hdp_issuer_fn issuer, void *ud,
                      const lk_hdp_tools_t *tools, lk_hdp_facts_t *facts);

/* The decoded token (same decoding as lk_hdp_verify) for the token-by-reference
 * store, and its header.token_id; NULL when it does not decode. */
json_t *lk_hdp_decode(const char *value, size_t len, lk_hdp_reason_t *why);

/* Same as lk_hdp_verify on an already decoded token. */
json_t *lk_hdp_verify_token(json_t *tok, int64_t now_ms, lk_hdp_issuer_fn issuer, void *ud,
                            const lk_hdp_tools_t *tools, lk_hdp_facts_t *facts);

/* The result for a token that could not be had (reason without a token). */
json_t *lk_hdp_result_reason(lk_hdp_reason_t reason, const char *detail, lk_hdp_facts_t *facts);

/* RFC 8785 canonical JSON of v: malloc'd, NUL-terminated, *len set; NULL when
 * v holds what JCS cannot express (non-finite numbers, too deep) or on OOM. */
char *lk_hdp_jcs(const json_t *v, size_t *len);

/* Parses JSON as HDP does: duplicate object members are refused. */
json_t *lk_hdp_parse(const char *s, size_t len, json_error_t *err);

/* Decodes an Ed25519 public key given as base64, base64url (padded or not)
 * or 64 hex digits. 0 / -1. */
int lk_hdp_parse_pubkey(const char *s, unsigned char pk[32]);

#endif
