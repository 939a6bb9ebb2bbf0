/*  policy_int - internals shared by the lk_policy sources (compiled document,
 *  normalized view of a body, the pattern scanner). Not part of the API.
 */
#ifndef POLICY_INT_H
#define POLICY_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "lk_policy.h"

enum {
    PII_EMAIL,
    PII_PHONE,
    PII_CARD,
    PII_SSN,
    PII_IBAN,
    PII_IP,
    PII_SECRET,
    PII_PRIVATE_KEY,
    PII_JWT,
    PII_N
};
enum { ON_REQUEST = 1, ON_ANSWER = 2 };

#define POLICY_MAX_DOC           (1024 * 1024)
#define POLICY_MAX_RULES         256
#define POLICY_MAX_PATTERNS      1024
#define POLICY_MAX_LIST          256
#define POLICY_MAX_PATTERN_LEN   4096
#define POLICY_STREAM_MAX_BUFFER (1024 * 1024)

typedef struct {
    pcre2_code *re;
    int pii;   /* PII_* for a detector, -1 for a rule's regex */
    int rule;  /* owning rule, -1 for a detector */
    char *src; /* the pattern text (NUL-terminated) */
    int in_hs; /* 1: part of the Hyperscan prefilter database */
} pat_t;

typedef struct {
    char **v;
    size_t n;
} globs_t;

typedef struct {
    char *path;
    json_t *equals; /* NULL unless "equals" */
    int pat;        /* -1 unless "regex" */
} targ_t;

typedef struct {
    char *name;
    globs_t g;
} hdr_t;

typedef struct {
    char id[64];
    int on;
    lk_action_t action;
    int dry;
    char msg[256];
    globs_t model, provider, team, agent, user;
    int *text;
    size_t n_text;
    unsigned pii; /* bit per PII_* */
    int has_tool;
    globs_t tool_name;
    targ_t *args;
    size_t n_args;
    hdr_t *hdrs;
    size_t n_hdrs;
    int hdp_present, hdp_verified, hdp_mismatch; /* -1: absent, else the wanted 0/1 */
    globs_t hdp_reason;
    int64_t tokens_over;     /* -1: absent */
    int64_t cost_over_micro; /* -1: absent */
    double anom_gte;         /* when.anomaly.score_gte; -1: absent */
    unsigned anom_reasons;   /* when.anomaly.reason: bit per LK_ANOM_REASONS name; 0: absent */
} rule_t;

typedef struct {
    char *glob;
    double in, out; /* USD per million tokens */
} price_t;

struct lk_policy {
    int dry;
    rule_t *rules;
    size_t n_rules;
    pat_t *pats; /* detectors first (index = PII_*), then rule regexes */
    size_t n_pats;
    price_t *prices;
    size_t n_prices;
    lk_policy_limits_t limits;
    int answer_rules;
    void *hs_db; /* hs_database_t *, NULL without Hyperscan */
};

/* One string the policy reads, inside the parsed body (redaction rewrites it in place). */
typedef struct {
    json_t *str;
} vitem_t;

typedef struct {
    const char *name;
    json_t *args; /* parsed arguments (owned when owned=1), NULL when not JSON */
    int owned;
} vcall_t;

typedef struct {
    json_t *root;
    const char *model;
    vitem_t *items;
    size_t n_items, cap_items;
    const char **defs;
    size_t n_defs, cap_defs;
    vcall_t *calls;
    size_t n_calls, cap_calls;
    int64_t max_tokens; /* -1: not given */
    size_t text_bytes;
} view_t;

/* policy_view.c */
int view_request(view_t *v, lk_api_t api, json_t *root, char *why, size_t whylen);
int view_answer(view_t *v, lk_api_t api, json_t *root, char *why, size_t whylen);
void view_free(view_t *v);

/* policy_match.c */
int pii_validate(int pii, const char *s, size_t len);
const char *pii_name(int pii);
int pii_index(const char *name);
const char *pii_regex(int pii);
/* One match of pattern pi in s from off (partial: PCRE2_PARTIAL_HARD). Returns 1 full match
 * [*a,*b), 2 partial match starting at *a, 0 none. Validators applied (invalid full matches
 * are skipped). */
int pat_next(const lk_policy_t *p, int pi, const char *s, size_t len, size_t off, int partial,
             pcre2_match_data *md, size_t *a, size_t *b);
int glob_any(const globs_t *g, const char *s);
/* Frees what jansson allocated (json_dumps) with jansson's current free: the
 * program may have installed its own allocator (lumkeyctl and the vault wipe). */
void jansson_free(void *p);
/* json_dumps into plain malloc memory (freed with free()). */
char *json_dumps_malloc(const json_t *j, size_t flags);
json_t *json_path_get(json_t *root, const char *path);
void rule_label(const lk_policy_t *p, int pi, char *out, size_t outlen);

/* policy_hs.c: the multi-pattern prefilter */
void policy_hs_build(lk_policy_t *p);
void policy_hs_free(lk_policy_t *p);
/* cand[pi] = 1 for every prefiltered pattern that may match s; -1 when no prefilter ran (scan all). */
int policy_hs_candidates(const lk_policy_t *p, const char *s, size_t len, unsigned char *cand);

/* lk_policy.c */
typedef struct {
    const lk_policy_t *p;
    const lk_policy_ctx_t *ctx;
    int side;
    const char *model;
    int64_t est_tokens;
    int64_t est_micro; /* -1 unknown */
} evalctx_t;
int rule_static_ok(const evalctx_t *e, const rule_t *r);
int rule_tool_ok(const lk_policy_t *p, const rule_t *r, const vcall_t *calls, size_t n_calls,
                 const char *const *defs, size_t n_defs, pcre2_match_data *md);
/* Combines matched[i] into r (action, would, rule_id, message). */
void combine(const lk_policy_t *p, const unsigned char *matched, lk_policy_result_t *r);

#endif
