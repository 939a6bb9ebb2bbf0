/*  policy_anomaly - a per-request anomaly score from online baselines per key
 *  and per agent identity (issue 10; method, scale and cold start:
 *  docs/policy.md "Anomaly scoring").
 *
 *  Scoring is pure in-memory work (no SQL on the request path once a
 *  subject's baseline is loaded: one query on its first use). Each policy
 *  replica keeps its own observations per subject and writes them to
 *  anomaly_baselines (migration 0017) from the worker's tick; it reads the
 *  other replicas' rows on its tick and merges them into what it scores
 *  against (sums of decayed counts, pooled EWMA moments), so replicas
 *  converge within a flush plus a refresh interval.
 *
 *  Not thread-safe: one engine per worker thread (lk_worker is single-threaded).
 */
#ifndef POLICY_ANOMALY_H
#define POLICY_ANOMALY_H

#include <stddef.h>
#include <stdint.h>

#include "lk_db.h"

#define PA_MAX_TOOLS   16 /* tool names considered per request */
#define PA_MAX_REASONS 3
#define PA_VALUE_MAX   64 /* longer model / tool / address values are cut */

typedef struct pa_engine pa_engine_t;

/* What one request looks like to the scorer. Strings may be NULL. */
typedef struct {
    const char *tenant;
    const char *key_id;
    const char *agent; /* key metadata `agent` (an identity across keys), NULL / "" = none */
    const char *model;
    const char *source_ip;
    const char *tools[PA_MAX_TOOLS]; /* tool names: declared and called in the request */
    size_t n_tools;
    int64_t est_tokens;   /* estimated prompt tokens + requested output limit */
    int64_t prompt_bytes; /* size of the request body */
    int64_t now_ms;       /* unix ms (hour of day, request rate) */
} pa_request_t;

typedef struct {
    char k[16]; /* "rate", "tokens", "spend", "prompt_len", "model", "tool", "ip", "hour", "block_rate",
                   "error_rate" */
    char v[PA_VALUE_MAX]; /* categorical: the unusual value; numeric: "" */
    double c;             /* contribution to the sum */
    double z;             /* numeric: robust z-score; categorical: 0 */
} pa_reason_t;

typedef struct {
    double score;   /* [0, 1]: 1 - exp(-sum of contributions) */
    double sum;     /* the sum of contributions */
    int cold;       /* the baseline has fewer than PA_COLD_N observations */
    int64_t n;      /* observations in the baseline that decided (all replicas) */
    int agent_subj; /* the agent's baseline decided (else the key's) */
    pa_reason_t reasons[PA_MAX_REASONS];
    size_t n_reasons; /* top contributions, largest first */
} pa_score_t;

#define PA_COLD_N 50

/* replica: this process's id in anomaly_baselines (NULL: random per start).
 * db may be NULL (in-memory only: tests, benchmarks). NULL when out of memory. */
pa_engine_t *pa_new(lk_db_t *db, const char *replica);
/* Flushes what is dirty (when there is a database), frees; nullifies *e. */
void pa_free(pa_engine_t **e);
/* Prepares the engine's statements on db. 0 / -1. */
int pa_prepare(lk_db_t *db) __attribute__((warn_unused_result));

/* Scores the request against its key's and agent's baselines (the higher
 * wins), then adds it to both. Loads a subject's baseline on first use. */
void pa_score(pa_engine_t *e, const pa_request_t *r, pa_score_t *out);
/* The decision's outcome: blocked (block or hold) and its estimated cost
 * (micro-USD, < 0 unknown), for the block rate and spend per hour. */
void pa_outcome(pa_engine_t *e, const pa_request_t *r, int blocked, int64_t est_microusd);

/* The score as the JSON object DECIDE_REP `anom` carries (NUL-terminated).
 * Returns the length, or 0 if cap is too small. */
size_t pa_score_json(const pa_score_t *s, char *buf, size_t cap);

/* Fills r's tools, est_tokens and prompt_bytes from a request body (JSON of
 * any API) in one scan; the tool names are copied into names. Never reads past len. */
void pa_extract(const char *body, size_t len, pa_request_t *r, char names[PA_MAX_TOOLS][PA_VALUE_MAX]);

/* One DECIDE's use of the engine (lumkey-policy): begin scores before the policy runs, end records
 * the outcome. Kept in the service object (its buffers are large). */
typedef struct {
    int active;
    pa_request_t r;
    char tenant[64], key[72], agent[PA_VALUE_MAX], model[PA_VALUE_MAX], ip[64];
    char tools[PA_MAX_TOOLS][PA_VALUE_MAX];
    pa_score_t s;
    unsigned reason_bits; /* lk_policy_anomaly_reason() of the top reasons */
    char out[1024];       /* the DECIDE_REP `anom` JSON */
} pa_call_t;
void pa_call_begin(pa_engine_t *e, pa_call_t *c, lk_str_t tenant, lk_str_t key_id, lk_str_t agent,
                   lk_str_t model, lk_str_t source_ip, lk_str_t body, int64_t now_ms);
/* blocked: 1 / 0, or -1 when the DECIDE failed (database away: not the key's doing, no outcome). */
void pa_call_end(pa_engine_t *e, pa_call_t *c, int blocked, int64_t est_microusd);

/* A window of the key's closing audit events: errs of all failed (5xx). The tick reads them from the
 * audit trail (tests call it directly); keys not in memory are skipped. */
void pa_errors(pa_engine_t *e, const char *tenant, const char *key_id, int64_t errs, int64_t all);

/* Worker tick: writes dirty subjects (own rows), reads the other replicas'
 * rows changed since the last refresh, drops rows untouched for 30 days.
 * force: flush now regardless of the interval. */
void pa_tick(pa_engine_t *e, int force);

/* Baseline state blobs (what anomaly_baselines.state holds): exposed for tests and the fuzz target. */
typedef struct pa_state pa_state_t;
size_t pa_state_size(void);
int pa_state_decode(const uint8_t *buf, size_t len,
                    pa_state_t *st); /* 0 / -1 (malformed), never reads past len */
size_t pa_state_encode(const pa_state_t *st, uint8_t *buf, size_t cap);
#define PA_STATE_MAX 16384

/* At most LUMKEY_ANOMALY_MAX_SUBJECTS (default 20000) subjects stay in memory: above it, the least
 * recently used fifth of those already written is dropped (called from pa_tick; tests call it). */
void pa_evict(pa_engine_t *e);

/* Number of subjects in memory (tests). */
size_t pa_subjects(const pa_engine_t *e);

#endif
