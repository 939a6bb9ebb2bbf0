/*  policy_anomaly - see policy_anomaly.h; method in docs/policy.md "Anomaly scoring". */
#include "policy_anomaly.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_log.h"
#include "lk_policy.h"
#include "lk_util.h"

/* ------------------------------------------------------------ parameters -- */

#define N_NUM        4   /* numeric features: */
#define F_RATE       0   /*   log requests per minute (fast EWMA of inter-arrival times) */
#define F_TOKENS     1   /*   log1p estimated tokens */
#define F_SPEND      2   /*   log1p micro-USD spent in the last hour (decayed) */
#define F_PLEN       3   /*   log1p request bytes */
#define W_MAX        200 /* EWMA horizon of a numeric baseline, in observations */
#define W_MIN_SCORE  10  /* a numeric feature is scored once its baseline has this many */
#define Z_FREE       2.5 /* z-scores up to this contribute nothing */
#define Z_CAP        4.0 /* a feature's contribution is at most this (times its weight) */
#define STD_FLOOR    0.25
#define MATURE_N0    20.0 /* maturity m = n / (n + MATURE_N0) */
#define HALVE_AT     2000 /* categorical counts are halved when a table's total reaches this */
#define CAT_FREE     1.3  /* log10(1/p) up to this (p >= 5 %) contributes nothing */
#define CAT_CAP      2.5
#define HOUR_MIN_N   200 /* the hour-of-day profile is scored from this many observations */
#define DESTR_PRIOR  0.5 /* an unseen destructive tool contributes at least this, even on a new key */
#define FAST_ALPHA   0.3 /* inter-arrival EWMA */
#define BLOCK_ALPHA  0.2 /* recent block rate EWMA */
#define CAT_MODEL_N  16
#define CAT_TOOL_N   48
#define CAT_IP_N     16
#define MAX_PEERS    16
#define BUCKETS      4096
#define FLUSH_MS     1000
#define REFRESH_MS   2000
#define PRUNE_MS     3600000
#define MAX_SUBJECTS 20000 /* default of LUMKEY_ANOMALY_MAX_SUBJECTS (~21 KB each) */

static const char *const NUM_NAMES[N_NUM] = {"rate", "tokens", "spend", "prompt_len"};
static const double NUM_W[N_NUM] = {1.3, 0.8, 0.8, 0.6};

/* ----------------------------------------------------------------- state -- */

typedef struct {
    double w, mean, var; /* EWMA weight (observations, capped at W_MAX), mean, variance */
} num_t;

typedef struct {
    char v[PA_VALUE_MAX];
    double c;
    uint32_t h; /* hash of v (compared first; not encoded) */
} cat_e;

typedef struct {
    double total; /* requests counted (decayed like the counts) */
    int n;
    cat_e e[CAT_TOOL_N];
} cat_t;

struct pa_state {
    int64_t n; /* observations */
    num_t num[N_NUM];
    num_t block; /* mean: share of blocked / held decisions */
    num_t err;   /* mean: share of failed answers (5xx), per window read from the audit trail */
    double hour[24];
    cat_t model, tool, ip;
};

static const int CAT_CAPS[3] = {CAT_MODEL_N, CAT_TOOL_N, CAT_IP_N};

typedef struct {
    char replica[64];
    uint8_t *blob; /* its row's state, encoded (a few hundred bytes, not a whole pa_state_t) */
    size_t len;
} peer_t;

typedef struct subj {
    struct subj *next;
    char tenant[64];
    char name[PA_VALUE_MAX + 8]; /* "k:<key id>" / "a:<agent>" */
    pa_state_t own;              /* this replica's observations */
    pa_state_t oth;              /* the sum of the peers' */
    peer_t *peers;
    int npeers;
    int dirty;
    int loaded;
    uint64_t used;
    /* engine clock of its last use (eviction) */ /* its rows were read (or there is no database) */
    /* local, not persisted: the recent behaviour */
    int64_t last_ms;
    double fast_dt; /* s, EWMA of inter-arrival times */
    double spend_h; /* micro-USD, decayed with a one-hour time constant */
    int64_t spend_ms;
    double block_fast;
    double err_fast;    /* recent share of failed answers */
    double err_pending; /* the last window's share, learnt at the next window (-1: none) */
} subj_t;

struct pa_engine {
    lk_db_t *db;
    char replica[64];
    subj_t *b[BUCKETS];
    size_t n_subj, max_subj;
    uint64_t clock;
    int64_t next_flush_ms, next_refresh_ms, next_prune_ms;
    int64_t seen_ms; /* newest peer updated_at read (ms) */
    int64_t err_seq; /* audit events read up to this seq for error rates (0: not started) */
};

/* ------------------------------------------------------------------ SQL -- */

static const char SQL_LOAD[] = "SELECT replica, state FROM anomaly_baselines WHERE tenant_id = $1::text AND "
                               "subject = $2::text LIMIT 64";
static const char SQL_SAVE[] =
    "INSERT INTO anomaly_baselines (tenant_id, subject, replica, n, state, updated_at) "
    "VALUES ($1::text, $2::text, $3::text, $4::bigint, $5::bytea, clock_timestamp()) "
    "ON CONFLICT (tenant_id, subject, replica) DO UPDATE SET n = excluded.n, state = excluded.state, "
    "updated_at = excluded.updated_at";
/* rows of other replicas changed since $2 (ms), with a margin for commits that raced the last read */
static const char SQL_PEERS[] =
    "SELECT tenant_id, subject, replica, state, (extract(epoch FROM updated_at) * 1000)::bigint "
    "FROM anomaly_baselines WHERE replica <> $1::text AND updated_at > to_timestamp($2::bigint / 1000.0) - "
    "interval '3 seconds' ORDER BY updated_at LIMIT 5000";
/* failed answers per key since audit seq $1 (the closing events; 5xx to the client or from the provider) */
static const char SQL_ERRORS[] =
    "SELECT coalesce(tenant_id, ''), key_id, count(*) FILTER (WHERE coalesce(http_status, 0) >= 500 OR "
    "coalesce(upstream_status, 0) >= 500), count(*), max(seq) FROM audit_events WHERE seq > $1::bigint AND "
    "kind IN ('request.completed', 'request.denied') AND key_id IS NOT NULL GROUP BY 1, 2";
static const char SQL_ERRORS_START[] = "SELECT coalesce(max(seq), 0) FROM audit_events";
static const char SQL_PRUNE[] = "DELETE FROM anomaly_baselines WHERE updated_at < now() - interval '30 days'";

int pa_prepare(lk_db_t *db)
{
    return lk_db_prepare(db, "anom_load", SQL_LOAD) != 0 || lk_db_prepare(db, "anom_save", SQL_SAVE) != 0 ||
                   lk_db_prepare(db, "anom_peers", SQL_PEERS) != 0 ||
                   lk_db_prepare(db, "anom_prune", SQL_PRUNE) != 0 ||
                   lk_db_prepare(db, "anom_errors", SQL_ERRORS) != 0 ||
                   lk_db_prepare(db, "anom_errors_start", SQL_ERRORS_START) != 0
               ? -1
               : 0;
}

/* --------------------------------------------------------------- helpers -- */

static void copy_value(char out[PA_VALUE_MAX], const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n >= PA_VALUE_MAX) n = PA_VALUE_MAX - 1;
    memcpy(out, s ? s : "", n);
    out[n] = '\0';
}

static uint32_t vhash(const char *v)
{
    uint32_t h = 2166136261u;
    for (; *v; v++)
        h = (h ^ (uint8_t)*v) * 16777619u;
    return h;
}

static int cat_find(const cat_t *t, const char *v, uint32_t h)
{
    for (int i = 0; i < t->n; i++)
        if (t->e[i].h == h && strcmp(t->e[i].v, v) == 0) return i;
    return -1;
}

static double cat_count(const cat_t *t, const char *v, uint32_t h)
{
    int i = cat_find(t, v, h);
    return i < 0 ? 0 : t->e[i].c;
}

static void cat_add(cat_t *t, const char *v, int cap)
{
    uint32_t h = vhash(v);
    int f = cat_find(t, v, h);
    if (f >= 0) {
        t->e[f].c += 1;
        return;
    }
    int slot = t->n;
    if (t->n >= cap) { /* full: the rarest value makes room */
        slot = 0;
        for (int i = 1; i < t->n; i++)
            if (t->e[i].c < t->e[slot].c) slot = i;
    } else {
        t->n++;
    }
    copy_value(t->e[slot].v, v);
    t->e[slot].c = 1;
    t->e[slot].h = h;
}

static void cat_halve(cat_t *t)
{
    t->total /= 2;
    for (int i = 0; i < t->n; i++)
        t->e[i].c /= 2;
}

static void num_add(num_t *x, double v)
{
    if (x->w < W_MAX) x->w += 1;
    double a = 1.0 / x->w, d = v - x->mean;
    x->mean += a * d;
    x->var = (1 - a) * (x->var + a * d * d);
}

/* Pooled moments of two baselines. */
static num_t num_pool(const num_t *a, const num_t *b)
{
    num_t r = {a->w + b->w, 0, 0};
    if (r.w <= 0) return r;
    r.mean = (a->w * a->mean + b->w * b->mean) / r.w;
    double da = a->mean - r.mean, db = b->mean - r.mean;
    r.var = (a->w * (a->var + da * da) + b->w * (b->var + db * db)) / r.w;
    return r;
}

static void state_sum(pa_state_t *acc, const pa_state_t *s)
{
    acc->n += s->n;
    for (int f = 0; f < N_NUM; f++)
        acc->num[f] = num_pool(&acc->num[f], &s->num[f]);
    acc->block = num_pool(&acc->block, &s->block);
    acc->err = num_pool(&acc->err, &s->err);
    for (int h = 0; h < 24; h++)
        acc->hour[h] += s->hour[h];
    cat_t *at[3] = {&acc->model, &acc->tool, &acc->ip};
    const cat_t *st[3] = {&s->model, &s->tool, &s->ip};
    for (int k = 0; k < 3; k++) {
        at[k]->total += st[k]->total;
        for (int i = 0; i < st[k]->n; i++) {
            int j;
            for (j = 0; j < at[k]->n; j++)
                if (at[k]->e[j].h == st[k]->e[i].h && strcmp(at[k]->e[j].v, st[k]->e[i].v) == 0) break;
            if (j == at[k]->n) {
                if (at[k]->n >= CAT_TOOL_N) continue; /* the sum keeps the first CAT_TOOL_N values */
                at[k]->n++;
                at[k]->e[j] = st[k]->e[i];
            } else {
                at[k]->e[j].c += st[k]->e[i].c;
            }
        }
    }
}

static void recompute_oth(subj_t *s)
{
    memset(&s->oth, 0, sizeof s->oth);
    pa_state_t *st = malloc(sizeof *st);
    for (int i = 0; st && i < s->npeers; i++)
        if (pa_state_decode(s->peers[i].blob, s->peers[i].len, st) == 0) state_sum(&s->oth, st);
    free(st);
}

/* ------------------------------------------------------------ encoding -- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int bad;
} wr_t;

static void put(wr_t *w, const void *v, size_t n)
{
    if (w->bad || w->len + n > w->cap) {
        w->bad = 1;
        return;
    }
    memcpy(w->p + w->len, v, n);
    w->len += n;
}

static void put_num(wr_t *w, const num_t *x)
{
    put(w, &x->w, 8);
    put(w, &x->mean, 8);
    put(w, &x->var, 8);
}

size_t pa_state_size(void)
{
    return sizeof(pa_state_t);
}

/* "PA1\1", n, 5 x (w, mean, var), 24 hours, 3 x (total, count, count x (len, bytes, c)); doubles in host
 * (little-endian) order. */
size_t pa_state_encode(const pa_state_t *st, uint8_t *buf, size_t cap)
{
    wr_t w = {buf, 0, cap, 0};
    put(&w, "PA1\1", 4);
    put(&w, &st->n, 8);
    for (int f = 0; f < N_NUM; f++)
        put_num(&w, &st->num[f]);
    put_num(&w, &st->block);
    put_num(&w, &st->err);
    put(&w, st->hour, sizeof st->hour);
    const cat_t *t[3] = {&st->model, &st->tool, &st->ip};
    for (int k = 0; k < 3; k++) {
        put(&w, &t[k]->total, 8);
        uint8_t n = (uint8_t)t[k]->n;
        put(&w, &n, 1);
        for (int i = 0; i < t[k]->n; i++) {
            uint8_t l = (uint8_t)strlen(t[k]->e[i].v);
            put(&w, &l, 1);
            put(&w, t[k]->e[i].v, l);
            put(&w, &t[k]->e[i].c, 8);
        }
    }
    return w.bad ? 0 : w.len;
}

typedef struct {
    const uint8_t *p;
    size_t len, off;
    int bad;
} rd_t;

static void get(rd_t *r, void *v, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = 1;
        memset(v, 0, n);
        return;
    }
    memcpy(v, r->p + r->off, n);
    r->off += n;
}

static int finite_nonneg(double d)
{
    return isfinite(d) && d >= 0;
}

static void get_num(rd_t *r, num_t *x)
{
    get(r, &x->w, 8);
    get(r, &x->mean, 8);
    get(r, &x->var, 8);
    if (!finite_nonneg(x->w) || x->w > 1e9 || !isfinite(x->mean) || fabs(x->mean) > 1e6 ||
        !finite_nonneg(x->var) || x->var > 1e9)
        r->bad = 1;
}

int pa_state_decode(const uint8_t *buf, size_t len, pa_state_t *st)
{
    rd_t r = {buf, len, 0, 0};
    memset(st, 0, sizeof *st);
    char magic[4];
    get(&r, magic, 4);
    if (r.bad || memcmp(magic, "PA1\1", 4) != 0) return -1;
    get(&r, &st->n, 8);
    if (st->n < 0) r.bad = 1;
    for (int f = 0; f < N_NUM; f++)
        get_num(&r, &st->num[f]);
    get_num(&r, &st->block);
    get_num(&r, &st->err);
    get(&r, st->hour, sizeof st->hour);
    for (int h = 0; h < 24; h++)
        if (!finite_nonneg(st->hour[h]) || st->hour[h] > 1e12) r.bad = 1;
    cat_t *t[3] = {&st->model, &st->tool, &st->ip};
    for (int k = 0; k < 3 && !r.bad; k++) {
        get(&r, &t[k]->total, 8);
        if (!finite_nonneg(t[k]->total) || t[k]->total > 1e12) r.bad = 1;
        uint8_t n = 0;
        get(&r, &n, 1);
        if (n > CAT_CAPS[k]) r.bad = 1;
        for (int i = 0; i < n && !r.bad; i++) {
            uint8_t l = 0;
            get(&r, &l, 1);
            if (l >= PA_VALUE_MAX) {
                r.bad = 1;
                break;
            }
            get(&r, t[k]->e[i].v, l);
            t[k]->e[i].v[l] = '\0';
            t[k]->e[i].h = vhash(t[k]->e[i].v);
            if (memchr(t[k]->e[i].v, '\0', l)) r.bad = 1;
            get(&r, &t[k]->e[i].c, 8);
            if (!finite_nonneg(t[k]->e[i].c) || t[k]->e[i].c > 1e12) r.bad = 1;
            t[k]->n = i + 1;
        }
    }
    if (r.bad || r.off != len) {
        memset(st, 0, sizeof *st);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------- engine -- */

static void free_subj(subj_t *s)
{
    for (int k = 0; k < s->npeers; k++)
        free(s->peers[k].blob);
    free(s->peers);
    free(s);
}

pa_engine_t *pa_new(lk_db_t *db, const char *replica)
{
    pa_engine_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->db = db;
    const char *mx = getenv("LUMKEY_ANOMALY_MAX_SUBJECTS");
    e->max_subj = mx && atol(mx) > 0 ? (size_t)atol(mx) : MAX_SUBJECTS;
    if (replica && *replica) {
        snprintf(e->replica, sizeof e->replica, "%s", replica);
    } else {
        uint8_t rnd[6];
        randombytes_buf(rnd, sizeof rnd);
        char hex[13];
        sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
        snprintf(e->replica, sizeof e->replica, "rep_%s", hex);
    }
    return e;
}

void pa_free(pa_engine_t **ep)
{
    if (!ep || !*ep) return;
    pa_engine_t *e = *ep;
    if (e->db) pa_tick(e, 1);
    for (int i = 0; i < BUCKETS; i++)
        for (subj_t *s = e->b[i], *n; s; s = n) {
            n = s->next;
            free_subj(s);
        }
    free(e);
    *ep = NULL;
}

size_t pa_subjects(const pa_engine_t *e)
{
    return e->n_subj;
}

static uint32_t hash2(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (; *b; b++)
        h = (h ^ (uint8_t)*b) * 16777619u;
    return h;
}

static subj_t *find(pa_engine_t *e, const char *tenant, const char *name)
{
    for (subj_t *s = e->b[hash2(tenant, name) % BUCKETS]; s; s = s->next)
        if (strcmp(s->name, name) == 0 && strcmp(s->tenant, tenant) == 0) return s;
    return NULL;
}

/* A peer row (or this replica's own row from an earlier start with the same id). */
static void apply_row(pa_engine_t *e, subj_t *s, const char *replica, const uint8_t *blob, size_t len)
{
    pa_state_t *st = malloc(sizeof *st);
    if (!st) return;
    if (pa_state_decode(blob, len, st) != 0) {
        lk_log_warn("anomaly baseline of %s (replica %s) is malformed: ignored", s->name, replica);
        free(st);
        return;
    }
    if (strcmp(replica, e->replica) == 0) {
        if (!s->loaded && s->own.n == 0) s->own = *st; /* our own row: at load, if memory has nothing newer */
        free(st);
        return;
    }
    free(st);
    uint8_t *copy = malloc(len);
    if (!copy) return;
    memcpy(copy, blob, len);
    int i;
    for (i = 0; i < s->npeers; i++)
        if (strcmp(s->peers[i].replica, replica) == 0) break;
    if (i == s->npeers) {
        peer_t *np = s->npeers < MAX_PEERS ? realloc(s->peers, sizeof *np * (size_t)(s->npeers + 1)) : NULL;
        if (!np) {
            free(copy);
            return;
        }
        s->peers = np;
        s->npeers++;
        snprintf(s->peers[i].replica, sizeof s->peers[i].replica, "%s", replica);
        s->peers[i].blob = NULL;
    }
    free(s->peers[i].blob);
    s->peers[i].blob = copy;
    s->peers[i].len = len;
    recompute_oth(s);
}

static void load(pa_engine_t *e, subj_t *s)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, s->tenant);
    lk_db_param_cstr(&p, s->name);
    PGresult *res = NULL;
    if (lk_db_exec(e->db, "anom_load", &p, &res) != LK_DB_OK) {
        PQclear(res);
        return; /* scored from memory meanwhile; retried at the next tick */
    }
    uint8_t *blob = malloc(PA_STATE_MAX);
    for (int i = 0; blob && i < PQntuples(res); i++) {
        char rep[64];
        size_t len = 0;
        lk_str_copy(rep, sizeof rep, lk_db_str(res, i, 0));
        if (lk_db_bytea(res, i, 1, blob, PA_STATE_MAX, &len) == 0) apply_row(e, s, rep, blob, len);
    }
    free(blob);
    PQclear(res);
    s->loaded = 1;
}

static subj_t *get_subj(pa_engine_t *e, const char *tenant, const char *name)
{
    subj_t *s = find(e, tenant, name);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        copy_value(s->tenant, tenant);
        snprintf(s->name, sizeof s->name, "%s", name);
        uint32_t h = hash2(s->tenant, s->name) % BUCKETS;
        s->next = e->b[h];
        e->b[h] = s;
        e->n_subj++;
        s->loaded = e->db == NULL;
        s->err_pending = -1;
    }
    if (!s->loaded) load(e, s);
    s->used = ++e->clock;
    return s;
}

/* --------------------------------------------------------------- scoring -- */

static int destructive(const char *name)
{
    static const char *const WORDS[] = {"delete", "drop",     "destroy", "remove",    "truncate", "wipe",
                                        "erase",  "purge",    "rm_",     "kill",      "shutdown", "exec",
                                        "shell",  "transfer", "wire_",   "payment",   "revoke",   "grant",
                                        "sudo",   "format",   "reset",   "terminate", NULL};
    char low[PA_VALUE_MAX];
    size_t i;
    for (i = 0; name[i] && i < sizeof low - 1; i++)
        low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    low[i] = '\0';
    for (int k = 0; WORDS[k]; k++)
        if (strstr(low, WORDS[k])) return 1;
    return 0;
}

typedef struct {
    pa_reason_t r[16];
    size_t n;
    double sum;
} contrib_t;

static void contribute(contrib_t *c, const char *k, const char *v, double amount, double z)
{
    if (!(amount > 0.005) || c->n >= 16) return;
    pa_reason_t *r = &c->r[c->n++];
    snprintf(r->k, sizeof r->k, "%s", k);
    copy_value(r->v, v);
    r->c = amount;
    r->z = z;
    c->sum += amount;
}

/* Categorical surprise: log10 of 1/p (smoothed), above CAT_FREE, capped. */
static double cat_surprise(double count, double total)
{
    if (total < 1) return 0;
    double p = (count + 0.5) / (total + 1);
    double s = log10(1 / p) - CAT_FREE;
    return s < 0 ? 0 : s > CAT_CAP ? CAT_CAP : s;
}

static double feature(const subj_t *s, int f, const pa_request_t *r, int *ok)
{
    *ok = 1;
    switch (f) {
    case F_RATE:
        if (!s->last_ms || s->fast_dt <= 0) break;
        {
            double dt = (double)(r->now_ms - s->last_ms) / 1000.0;
            if (dt < 0.001) dt = 0.001;
            if (dt > 3600) dt = 3600;
            double fd = (1 - FAST_ALPHA) * s->fast_dt + FAST_ALPHA * dt;
            return log(60.0 / fd);
        }
    case F_TOKENS:
        if (r->est_tokens < 0) break;
        return log1p((double)r->est_tokens);
    case F_SPEND:
        return log1p(s->spend_h * exp(-(double)(r->now_ms - s->spend_ms) / 3600000.0));
    case F_PLEN:
        if (r->prompt_bytes < 0) break;
        return log1p((double)r->prompt_bytes);
    }
    *ok = 0;
    return 0;
}

static int hour_of(int64_t ms)
{
    return (int)((ms / 3600000) % 24);
}

/* The sum of contributions of request r against subject s's baseline (own + peers'). */
static void score_subject(const subj_t *s, const pa_request_t *r, contrib_t *c, int64_t *n_out)
{
    const pa_state_t *o = &s->own, *q = &s->oth;
    double n = (double)(o->n + q->n);
    double m = n / (n + MATURE_N0);
    *n_out = o->n + q->n;
    for (int f = 0; f < N_NUM; f++) {
        int ok;
        double x = feature(s, f, r, &ok);
        num_t b = num_pool(&o->num[f], &q->num[f]);
        if (!ok || b.w < W_MIN_SCORE) continue;
        double z = (x - b.mean) / sqrt(b.var + STD_FLOOR * STD_FLOOR);
        double a = z - Z_FREE;
        if (a > 0) contribute(c, NUM_NAMES[f], "", m * NUM_W[f] * (a > Z_CAP ? Z_CAP : a), z);
    }
    char v[PA_VALUE_MAX];
    if (r->model && *r->model) {
        copy_value(v, r->model);
        uint32_t h = vhash(v);
        contribute(c, "model", v,
                   m * cat_surprise(cat_count(&o->model, v, h) + cat_count(&q->model, v, h),
                                    o->model.total + q->model.total),
                   0);
    }
    if (r->source_ip && *r->source_ip) {
        copy_value(v, r->source_ip);
        uint32_t h = vhash(v);
        contribute(
            c, "ip", v,
            m * cat_surprise(cat_count(&o->ip, v, h) + cat_count(&q->ip, v, h), o->ip.total + q->ip.total),
            0);
    }
    /* tools: the most surprising one counts */
    double best = 0;
    char bv[PA_VALUE_MAX] = "";
    for (size_t i = 0; i < r->n_tools; i++) {
        copy_value(v, r->tools[i]);
        uint32_t h = vhash(v);
        double cnt = cat_count(&o->tool, v, h) + cat_count(&q->tool, v, h);
        double sur = cat_surprise(cnt, o->tool.total + q->tool.total);
        int d = sur > 0 || cnt < 0.5 ? destructive(v) : 0; /* a usual tool counts nothing either way */
        double a = m * (d ? 2.0 : 1.0) * sur;
        if (d && cnt < 0.5 && a < DESTR_PRIOR) a = DESTR_PRIOR; /* cold start: never invisible */
        if (a > best) best = a, memcpy(bv, v, sizeof bv);
    }
    contribute(c, "tool", bv, best, 0);
    if (n >= HOUR_MIN_N) {
        double tot = 0;
        const double *h1 = o->hour, *h2 = q->hour;
        for (int h = 0; h < 24; h++)
            tot += h1[h] + h2[h];
        int h = hour_of(r->now_ms);
        double p = (h1[h] + h2[h] + 0.5) / (tot + 12);
        double a = log10(1 / p) - 1.8;
        char hv[8];
        snprintf(hv, sizeof hv, "%02d", h);
        if (a > 0) contribute(c, "hour", hv, m * 0.6 * (a > 2 ? 2 : a), 0);
    }
    num_t bl = num_pool(&o->block, &q->block);
    if (bl.w >= W_MIN_SCORE) {
        double a = s->block_fast - bl.mean - 0.2;
        if (a > 0) contribute(c, "block_rate", "", m * 2.5 * a, 0);
    }
    num_t er = num_pool(&o->err, &q->err);
    if (er.w >= 3) {
        double a = s->err_fast - er.mean - 0.2;
        if (a > 0) contribute(c, "error_rate", "", m * 3.0 * a, 0);
    }
}

static void observe(subj_t *s, const pa_request_t *r)
{
    pa_state_t *o = &s->own;
    for (int f = 0; f < N_NUM; f++) {
        int ok;
        double x = feature(s, f, r, &ok);
        if (ok) num_add(&o->num[f], x);
    }
    if (s->last_ms) {
        double dt = (double)(r->now_ms - s->last_ms) / 1000.0;
        if (dt < 0.001) dt = 0.001;
        if (dt > 3600) dt = 3600;
        s->fast_dt = s->fast_dt > 0 ? (1 - FAST_ALPHA) * s->fast_dt + FAST_ALPHA * dt : dt;
    }
    if (r->now_ms > s->last_ms) s->last_ms = r->now_ms;
    char v[PA_VALUE_MAX];
    if (r->model && *r->model) copy_value(v, r->model), cat_add(&o->model, v, CAT_MODEL_N);
    o->model.total += 1;
    if (r->source_ip && *r->source_ip) copy_value(v, r->source_ip), cat_add(&o->ip, v, CAT_IP_N);
    o->ip.total += 1;
    for (size_t i = 0; i < r->n_tools; i++)
        copy_value(v, r->tools[i]), cat_add(&o->tool, v, CAT_TOOL_N);
    o->tool.total += 1;
    o->hour[hour_of(r->now_ms)] += 1;
    o->n++;
    if (o->model.total >= HALVE_AT) {
        cat_halve(&o->model);
        cat_halve(&o->ip);
        cat_halve(&o->tool);
        for (int h = 0; h < 24; h++)
            o->hour[h] /= 2;
    }
    s->dirty = 1;
}

static int top_cmp(const void *a, const void *b)
{
    double x = ((const pa_reason_t *)a)->c, y = ((const pa_reason_t *)b)->c;
    return x < y ? 1 : x > y ? -1 : 0;
}

void pa_score(pa_engine_t *e, const pa_request_t *r, pa_score_t *out)
{
    memset(out, 0, sizeof *out);
    char name[PA_VALUE_MAX + 8];
    const char *tenant = r->tenant ? r->tenant : "";
    subj_t *subs[2] = {NULL, NULL};
    if (r->key_id && *r->key_id) {
        snprintf(name, sizeof name, "k:%.*s", PA_VALUE_MAX - 1, r->key_id);
        subs[0] = get_subj(e, tenant, name);
    }
    if (r->agent && *r->agent) {
        snprintf(name, sizeof name, "a:%.*s", PA_VALUE_MAX - 1, r->agent);
        subs[1] = get_subj(e, tenant, name);
    }
    contrib_t best = {0};
    int have = 0;
    for (int i = 0; i < 2; i++) {
        if (!subs[i]) continue;
        contrib_t c = {0};
        int64_t n = 0;
        score_subject(subs[i], r, &c, &n);
        if (!have || c.sum > best.sum) {
            best = c;
            out->n = n;
            out->agent_subj = i == 1;
            have = 1;
        }
    }
    for (int i = 0; i < 2; i++)
        if (subs[i]) observe(subs[i], r);
    out->sum = best.sum;
    out->score = 1 - exp(-best.sum);
    out->cold = out->n < PA_COLD_N;
    qsort(best.r, best.n, sizeof best.r[0], top_cmp);
    out->n_reasons = best.n < PA_MAX_REASONS ? best.n : PA_MAX_REASONS;
    memcpy(out->reasons, best.r, out->n_reasons * sizeof best.r[0]);
}

void pa_outcome(pa_engine_t *e, const pa_request_t *r, int blocked, int64_t est_microusd)
{
    char name[PA_VALUE_MAX + 8];
    const char *tenant = r->tenant ? r->tenant : "";
    for (int i = 0; i < 2; i++) {
        const char *id = i == 0 ? r->key_id : r->agent;
        if (!id || !*id) continue;
        snprintf(name, sizeof name, "%s:%.*s", i == 0 ? "k" : "a", PA_VALUE_MAX - 1, id);
        subj_t *s = find(e, tenant, name);
        if (!s) continue;
        num_add(&s->own.block, blocked ? 1.0 : 0.0);
        s->block_fast = (1 - BLOCK_ALPHA) * s->block_fast + BLOCK_ALPHA * (blocked ? 1.0 : 0.0);
        if (est_microusd > 0 && !blocked) {
            s->spend_h =
                s->spend_h * exp(-(double)(r->now_ms - s->spend_ms) / 3600000.0) + (double)est_microusd;
            s->spend_ms = r->now_ms;
        }
        s->dirty = 1;
    }
}

/* ------------------------------------------------------------------ JSON -- */

static size_t json_str(char *buf, size_t cap, size_t off, const char *s)
{
    static const char HEX[] = "0123456789abcdef";
    if (off < cap) buf[off] = '"';
    off++;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        size_t n = 0;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p, n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(esc, "\\u00", 4), esc[4] = HEX[*p >> 4], esc[5] = HEX[*p & 15], n = 6;
        } else {
            esc[0] = (char)*p, n = 1;
        }
        for (size_t i = 0; i < n; i++, off++)
            if (off < cap) buf[off] = esc[i];
    }
    if (off < cap) buf[off] = '"';
    return off + 1;
}

/* Values come from the request and are cut at PA_VALUE_MAX bytes: any byte that is not part of a
 * well-formed UTF-8 sequence (a cut one at the end included) becomes '?', so the JSON is always valid. */
static void utf8_clean(char *v)
{
    unsigned char *p = (unsigned char *)v;
    size_t n = strlen(v);
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80                      ? 1
                     : (c >> 5) == 6 && c >= 0xc2  ? 2
                     : (c >> 4) == 14              ? 3
                     : (c >> 3) == 30 && c <= 0xf4 ? 4
                                                   : 0;
        int ok = len && i + len <= n;
        for (size_t j = 1; ok && j < len; j++)
            ok = (p[i + j] & 0xc0) == 0x80;
        /* no overlong forms, no surrogates, nothing above U+10FFFF (what JSON parsers refuse) */
        if (ok && len == 3) ok = !(c == 0xe0 && p[i + 1] < 0xa0) && !(c == 0xed && p[i + 1] > 0x9f);
        if (ok && len == 4) ok = !(c == 0xf0 && p[i + 1] < 0x90) && !(c == 0xf4 && p[i + 1] > 0x8f);
        if (!ok) {
            p[i++] = '?';
            continue;
        }
        i += len;
    }
}

size_t pa_score_json(const pa_score_t *s, char *buf, size_t cap)
{
    size_t off = 0;
    int n = snprintf(
        buf, cap, "{\"score\":%.4f,\"sum\":%.3f,\"cold\":%s,\"n\":%lld,\"subj\":\"%s\",\"reasons\":[",
        s->score, s->sum, s->cold ? "true" : "false", (long long)s->n, s->agent_subj ? "agent" : "key");
    if (n < 0) return 0;
    off = (size_t)n;
    for (size_t i = 0; i < s->n_reasons; i++) {
        const pa_reason_t *r = &s->reasons[i];
        char v[PA_VALUE_MAX];
        memcpy(v, r->v, sizeof v);
        utf8_clean(v);
        char head[96];
        n = snprintf(head, sizeof head, "%s{\"k\":\"%s\",\"c\":%.3f", i ? "," : "", r->k, r->c);
        for (int j = 0; j < n; j++, off++)
            if (off < cap) buf[off] = head[j];
        if (r->z != 0) {
            n = snprintf(head, sizeof head, ",\"z\":%.2f", r->z);
            for (int j = 0; j < n; j++, off++)
                if (off < cap) buf[off] = head[j];
        }
        if (v[0]) {
            const char *vk = ",\"v\":";
            for (int j = 0; vk[j]; j++, off++)
                if (off < cap) buf[off] = vk[j];
            off = json_str(buf, cap, off, v);
        }
        if (off < cap) buf[off] = '}';
        off++;
    }
    const char *tail = "]}";
    for (int j = 0; tail[j]; j++, off++)
        if (off < cap) buf[off] = tail[j];
    if (off >= cap) return 0;
    buf[off] = '\0';
    return off;
}

/* ------------------------------------------------------------- features -- */

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* After a key at p: whitespace, ':', whitespace; the value's first byte, or NULL. */
static const char *value_of(const char *p, const char *e)
{
    p = skip_ws(p, e);
    if (p >= e || *p != ':') return NULL;
    p = skip_ws(p + 1, e);
    return p < e ? p : NULL;
}

/* A single scan of the body, no JSON tree (docs/policy.md "Anomaly scoring": every string member
 * "name" counts as a tool name; values with escapes are skipped). */
void pa_extract(const char *body, size_t len, pa_request_t *r, char names[PA_MAX_TOOLS][PA_VALUE_MAX])
{
    r->n_tools = 0;
    r->prompt_bytes = (int64_t)len;
    r->est_tokens = (int64_t)(len / 4);
    if (!body || !len) return;
    const char *e = body + len, *p;
    static const char *const MAXK[] = {"\"max_tokens\"", "\"max_completion_tokens\"", "\"max_output_tokens\"",
                                       NULL};
    for (int k = 0; MAXK[k]; k++) {
        size_t kl = strlen(MAXK[k]);
        if (!(p = memmem(body, len, MAXK[k], kl)) || !(p = value_of(p + kl, e))) continue;
        int64_t v = 0;
        int digits = 0;
        while (p < e && *p >= '0' && *p <= '9' && digits < 8)
            v = v * 10 + (*p++ - '0'), digits++;
        if (digits && digits < 8) {
            r->est_tokens += v;
            break;
        }
    }
    for (p = body; p < e && (p = memmem(p, (size_t)(e - p), "\"name\"", 6));) {
        p += 6;
        const char *v = value_of(p, e);
        if (!v || *v != '"') continue;
        const char *s = ++v;
        while (v < e && *v != '"' && *v != '\\' && (unsigned char)*v >= 0x20)
            v++;
        p = v;
        if (v >= e || *v != '"' || v == s || r->n_tools >= PA_MAX_TOOLS) continue;
        size_t n = (size_t)(v - s) < PA_VALUE_MAX - 1 ? (size_t)(v - s) : PA_VALUE_MAX - 1;
        char *dst = names[r->n_tools];
        memcpy(dst, s, n);
        dst[n] = '\0';
        int dup = 0;
        for (size_t i = 0; i < r->n_tools && !dup; i++)
            dup = strcmp(r->tools[i], dst) == 0;
        if (!dup) r->tools[r->n_tools++] = dst;
    }
}

/* ------------------------------------------------------------ persistence -- */

static void flush(pa_engine_t *e)
{
    uint8_t *blob = malloc(PA_STATE_MAX);
    if (!blob) return;
    int fails = 0, any = 0;
    for (int i = 0; i < BUCKETS && !any; i++)
        for (subj_t *s = e->b[i]; s && !any; s = s->next)
            any = s->dirty;
    if (!any || lk_db_begin(e->db) != LK_DB_OK) { /* one transaction: one commit per flush */
        free(blob);
        return;
    }
    for (int i = 0; i < BUCKETS && !fails; i++)
        for (subj_t *s = e->b[i]; s && !fails; s = s->next) {
            if (!s->dirty) continue;
            size_t len = pa_state_encode(&s->own, blob, PA_STATE_MAX);
            if (!len) continue;
            lk_db_params_t p;
            lk_db_params_init(&p);
            lk_db_param_cstr(&p, s->tenant);
            lk_db_param_cstr(&p, s->name);
            lk_db_param_cstr(&p, e->replica);
            lk_db_param_i64(&p, s->own.n);
            lk_db_param_bytes(&p, blob, len);
            PGresult *res = NULL;
            if (lk_db_exec(e->db, "anom_save", &p, &res) == LK_DB_OK)
                s->dirty = 2; /* written, once committed */
            else
                fails++; /* the database is away: keep it dirty, try at the next tick */
            PQclear(res);
        }
    if (!fails && lk_db_commit(e->db) == LK_DB_OK) {
        fails = -1;
    } else if (!fails) {
        fails = 1;
    } else {
        lk_db_rollback(e->db);
    }
    for (int i = 0; i < BUCKETS; i++) /* committed: clean; else dirty again for the next tick */
        for (subj_t *s = e->b[i]; s; s = s->next)
            if (s->dirty == 2) s->dirty = fails < 0 ? 0 : 1;
    free(blob);
}

static void refresh(pa_engine_t *e)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, e->replica);
    lk_db_param_i64(&p, e->seen_ms);
    PGresult *res = NULL;
    if (lk_db_exec(e->db, "anom_peers", &p, &res) != LK_DB_OK) {
        PQclear(res);
        return;
    }
    uint8_t *blob = malloc(PA_STATE_MAX);
    for (int i = 0; blob && i < PQntuples(res); i++) {
        char tenant[64], name[PA_VALUE_MAX + 8], rep[64];
        lk_str_copy(tenant, sizeof tenant, lk_db_str(res, i, 0));
        lk_str_copy(name, sizeof name, lk_db_str(res, i, 1));
        lk_str_copy(rep, sizeof rep, lk_db_str(res, i, 2));
        int64_t at = lk_db_i64(res, i, 4);
        if (at > e->seen_ms) e->seen_ms = at;
        subj_t *s = find(e, tenant, name);
        size_t len = 0;
        if (s && s->loaded && lk_db_bytea(res, i, 3, blob, PA_STATE_MAX, &len) == 0)
            apply_row(e, s, rep, blob, len);
    }
    free(blob);
    PQclear(res);
}

void pa_errors(pa_engine_t *e, const char *tenant, const char *key_id, int64_t errs, int64_t all)
{
    char name[PA_VALUE_MAX + 8];
    snprintf(name, sizeof name, "k:%.*s", PA_VALUE_MAX - 1, key_id);
    subj_t *s = find(e, tenant, name);
    if (!s || all <= 0 || errs < 0 || errs > all) return;
    double frac = (double)errs / (double)all, keep = pow(1 - BLOCK_ALPHA, (double)all);
    s->err_fast = keep * s->err_fast + (1 - keep) * frac;
    /* the baseline learns each window one window late, so that a failing window is judged against
     * what came before it, not against itself */
    if (s->err_pending >= 0) num_add(&s->own.err, s->err_pending);
    s->err_pending = frac;
    s->dirty = 1;
}

/* Error rates come from the audit trail (the only place that knows how answers ended): every
 * refresh reads the closing events recorded since the last one, per key, and feeds the keys in memory.
 * Best effort: an event whose seq was taken before a newer one committed after the read is missed. */
static void read_errors(pa_engine_t *e)
{
    PGresult *res = NULL;
    if (!e->err_seq) {
        if (lk_db_exec(e->db, "anom_errors_start", NULL, &res) == LK_DB_OK && PQntuples(res) == 1)
            e->err_seq = lk_db_i64(res, 0, 0) > 0 ? lk_db_i64(res, 0, 0) : 1;
        PQclear(res);
        return;
    }
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_i64(&p, e->err_seq);
    if (lk_db_exec(e->db, "anom_errors", &p, &res) != LK_DB_OK) {
        PQclear(res);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        char tenant[64], name[PA_VALUE_MAX + 8];
        lk_str_copy(tenant, sizeof tenant, lk_db_str(res, i, 0));
        lk_str_t key = lk_db_str(res, i, 1);
        snprintf(name, sizeof name, "k:%.*s", (int)(key.len < PA_VALUE_MAX - 1 ? key.len : PA_VALUE_MAX - 1),
                 key.ptr);
        int64_t top = lk_db_i64(res, i, 4);
        if (top > e->err_seq) e->err_seq = top;
        pa_errors(e, tenant, name + 2, lk_db_i64(res, i, 2), lk_db_i64(res, i, 3));
    }
    PQclear(res);
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Over the limit: the least recently used fifth of the written subjects leaves memory (their rows stay:
 * a later request loads them again). */
void pa_evict(pa_engine_t *e)
{
    if (e->n_subj <= e->max_subj) return;
    uint64_t *u = malloc(e->n_subj * sizeof *u);
    if (!u) return;
    size_t n = 0;
    for (int i = 0; i < BUCKETS; i++)
        for (subj_t *s = e->b[i]; s && n < e->n_subj; s = s->next)
            u[n++] = s->used;
    qsort(u, n, sizeof *u, u64_cmp);
    uint64_t cut = u[n / 5];
    free(u);
    size_t before = e->n_subj;
    for (int i = 0; i < BUCKETS; i++)
        for (subj_t **pp = &e->b[i]; *pp;) {
            subj_t *s = *pp;
            if (s->used <= cut && !s->dirty) {
                *pp = s->next;
                free_subj(s);
                e->n_subj--;
            } else {
                pp = &s->next;
            }
        }
    if (before > e->n_subj)
        lk_log_info("anomaly baselines: %zu of %zu subjects left memory (LUMKEY_ANOMALY_MAX_SUBJECTS %zu)",
                    before - e->n_subj, before, e->max_subj);
}

void pa_tick(pa_engine_t *e, int force)
{
    if (!e) return;
    if (!e->db) {
        pa_evict(e);
        return;
    }
    int64_t now = lk_now_ms();
    if (force || now >= e->next_flush_ms) {
        e->next_flush_ms = now + FLUSH_MS;
        flush(e);
    }
    if (!force && now >= e->next_refresh_ms) {
        e->next_refresh_ms = now + REFRESH_MS;
        if (!e->seen_ms) e->seen_ms = now - 5000;
        refresh(e);
        read_errors(e);
        for (int i = 0; i < BUCKETS; i++) /* subjects whose load failed */
            for (subj_t *s = e->b[i]; s; s = s->next)
                if (!s->loaded) load(e, s);
    }
    if (!force) pa_evict(e); /* after the flush: what is written may leave */
    if (!force && now >= e->next_prune_ms) {
        e->next_prune_ms = now + PRUNE_MS;
        PGresult *res = NULL;
        if (lk_db_exec(e->db, "anom_prune", NULL, &res) != LK_DB_OK) e->next_prune_ms = now + 60000;
        PQclear(res);
    }
}

/* ------------------------------------------------------------ one DECIDE -- */

void pa_call_begin(pa_engine_t *e, pa_call_t *c, lk_str_t tenant, lk_str_t key_id, lk_str_t agent,
                   lk_str_t model, lk_str_t source_ip, lk_str_t body, int64_t now_ms)
{
    memset(&c->r, 0, sizeof c->r);
    c->active = 1;
    c->r.tenant = lk_str_copy(c->tenant, sizeof c->tenant, tenant);
    c->r.key_id = lk_str_copy(c->key, sizeof c->key, key_id);
    c->r.agent = lk_str_copy(c->agent, sizeof c->agent, agent);
    c->r.model = lk_str_copy(c->model, sizeof c->model, model);
    c->r.source_ip = lk_str_copy(c->ip, sizeof c->ip, source_ip);
    c->r.now_ms = now_ms;
    pa_extract(body.ptr, body.len, &c->r, c->tools);
    pa_score(e, &c->r, &c->s);
    c->reason_bits = 0;
    for (size_t i = 0; i < c->s.n_reasons; i++)
        c->reason_bits |= lk_policy_anomaly_reason(c->s.reasons[i].k);
    if (!pa_score_json(&c->s, c->out, sizeof c->out))
        snprintf(c->out, sizeof c->out, "{\"score\":%.4f}", c->s.score);
}

void pa_call_end(pa_engine_t *e, pa_call_t *c, int blocked, int64_t est_microusd)
{
    if (!c->active) return;
    if (blocked >= 0) pa_outcome(e, &c->r, blocked, est_microusd);
    c->active = 0;
}
