/*  test_anomaly - policy_anomaly without a database (issue 10):
 *
 *  - a replay of synthetic normal traffic (deterministic PRNG: 5,000 requests
 *    over ~2 days with a diurnal rate, Poisson arrivals, lognormal tokens, the
 *    usual model mix, tools and source addresses, 2 % blocked) keeps the
 *    false-positive rate at threshold 0.8 under 1 % (printed);
 *  - then, on the same trained baseline, a 10x burst, an unseen model, an
 *    unseen destructive tool and a new source address each cross 0.8 within
 *    a stated number of requests (asserted, printed);
 *  - cold start: a new key is neither flagged for being new nor blind to a
 *    destructive tool; a new key of a known agent is scored against the agent;
 *  - baseline blobs round-trip and every truncation or corruption is refused;
 *  - the DECIDE_REP JSON is valid JSON with the score and reasons.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_test.h"
#include "policy_anomaly.h"

#define THRESHOLD 0.8
#define N_NORMAL  5000
#define FP_BOUND  0.01 /* stated bound: < 1 % of normal requests at or above 0.8 */
/* stated detection bounds, in requests after the change starts */
#define BURST_MAX 12
#define MODEL_MAX 1
#define TOOL_MAX  1
#define IP_MAX    1

static uint64_t s_rng;

static double urand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return ((double)(s_rng >> 11) + 0.5) / 9007199254740992.0;
}

static double nrand(void)
{
    return sqrt(-2 * log(urand())) * cos(2 * M_PI * urand());
}

/* Requests per minute at unix time t: busy from 8 to 18 UTC, quiet at night. */
static double rate_at(int64_t ms)
{
    double h = (double)((ms / 60000) % 1440) / 60.0;
    double day = h >= 6 && h <= 20 ? sin(M_PI * (h - 6) / 14) : 0;
    return 4.0 * (0.15 + day);
}

typedef struct {
    int64_t now;
    pa_request_t r;
    int blocked;
    int64_t cost;
} gen_t;

static const char *const MODELS[] = {"gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet"};
static const char *const IPS[] = {"10.0.0.7", "10.0.0.8", "192.0.2.10"};

/* The next normal request of key_1 / agent billing-bot. */
static void next_normal(gen_t *g, double rate_mult)
{
    double rpm = rate_at(g->now) * rate_mult;
    g->now += (int64_t)(-log(urand()) / rpm * 60000.0) + 1;
    memset(&g->r, 0, sizeof g->r);
    g->r.tenant = "default";
    g->r.key_id = "key_1";
    g->r.agent = "billing-bot";
    double u = urand();
    g->r.model = MODELS[u < 0.70 ? 0 : u < 0.95 ? 1 : 2];
    u = urand();
    g->r.source_ip = IPS[u < 0.80 ? 0 : u < 0.95 ? 1 : 2];
    g->r.tools[g->r.n_tools++] = "search_docs";
    g->r.tools[g->r.n_tools++] = "get_invoice";
    if (urand() < 0.30) g->r.tools[g->r.n_tools++] = "create_ticket";
    if (urand() < 0.10) g->r.tools[g->r.n_tools++] = "send_email";
    g->r.est_tokens = (int64_t)exp(log(800) + 0.5 * nrand());
    g->r.prompt_bytes = (int64_t)((double)g->r.est_tokens * 3.5 * exp(0.15 * nrand()));
    g->r.now_ms = g->now;
    g->blocked = urand() < 0.02;
    g->cost = g->r.est_tokens * 2; /* micro-USD */
}

static int64_t T0 = 1767571200000LL; /* Mon 2026-01-05 00:00 UTC */

/* A fresh engine trained on the normal replay; returns the false-positive rate (and counts). */
static pa_engine_t *trained(double *fp_rate, int *fps, int *fps_warm, gen_t *g)
{
    pa_engine_t *e = pa_new(NULL, "test");
    s_rng = 0x9E3779B97F4A7C15ULL;
    memset(g, 0, sizeof *g);
    g->now = T0;
    int flagged = 0, flagged_warm = 0;
    for (int i = 0; i < N_NORMAL; i++) {
        next_normal(g, 1.0);
        pa_score_t s;
        pa_score(e, &g->r, &s);
        if (s.score >= THRESHOLD) {
            flagged++;
            if (i >= 200) flagged_warm++;
        }
        pa_outcome(e, &g->r, g->blocked, g->cost);
    }
    *fp_rate = (double)flagged / N_NORMAL;
    *fps = flagged;
    *fps_warm = flagged_warm;
    return e;
}

static void test_replay_false_positives(void)
{
    gen_t g;
    double fp;
    int n, nw;
    pa_engine_t *e = trained(&fp, &n, &nw, &g);
    printf(
        "anomaly replay: %d normal requests over %.1f h, %d at or above %.2f (false-positive rate %.3f %%, "
        "%d after the first 200)\n",
        N_NORMAL, (double)(g.now - T0) / 3600000.0, n, THRESHOLD, fp * 100, nw);
    LK_CHECK(fp < FP_BOUND);
    LK_CHECK(pa_subjects(e) == 2); /* the key and its agent */
    pa_free(&e);
}

/* Requests until the score reaches the threshold (1 = the first one), or 1000. */
typedef void (*mutate_fn)(gen_t *g, int i);

static int requests_to_flag(mutate_fn m, double rate_mult, double *max_score)
{
    gen_t g;
    double fp;
    int n, nw;
    pa_engine_t *e = trained(&fp, &n, &nw, &g);
    /* resume in working hours, as the attacks would */
    while (rate_at(g.now) < 3.0) {
        next_normal(&g, 1.0);
        pa_score_t s;
        pa_score(e, &g.r, &s);
        pa_outcome(e, &g.r, g.blocked, g.cost);
    }
    int found = 1000;
    *max_score = 0;
    for (int i = 1; i <= 200; i++) {
        next_normal(&g, rate_mult);
        if (m) m(&g, i);
        pa_score_t s;
        pa_score(e, &g.r, &s);
        pa_outcome(e, &g.r, 0, g.cost);
        if (s.score > *max_score) *max_score = s.score;
        if (s.score >= THRESHOLD && found == 1000) {
            found = i;
            char js[1024];
            pa_score_json(&s, js, sizeof js);
            printf("   flagged at request %d: %s\n", i, js);
        }
    }
    pa_free(&e);
    return found;
}

static void new_model(gen_t *g, int i)
{
    g->r.model = "gpt-9-ultra";
}
static void new_tool(gen_t *g, int i)
{
    g->r.tools[g->r.n_tools++] = "delete_database";
}
static void new_ip(gen_t *g, int i)
{
    g->r.source_ip = "203.0.113.99";
}

static void test_attacks(void)
{
    double mx;
    int n = requests_to_flag(NULL, 1.0, &mx);
    printf("anomaly control (no change): flagged at %d (1000 = never in 200), max score %.3f\n", n, mx);
    LK_CHECK(n == 1000);
    n = requests_to_flag(NULL, 10.0, &mx);
    printf("anomaly burst (10x rate): flagged after %d requests (bound %d), max score %.3f\n", n, BURST_MAX,
           mx);
    LK_CHECK(n <= BURST_MAX);
    n = requests_to_flag(new_model, 1.0, &mx);
    printf("anomaly unseen model: flagged after %d requests (bound %d)\n", n, MODEL_MAX);
    LK_CHECK(n <= MODEL_MAX);
    n = requests_to_flag(new_tool, 1.0, &mx);
    printf("anomaly unseen destructive tool: flagged after %d requests (bound %d), max score %.3f\n", n,
           TOOL_MAX, mx);
    LK_CHECK(n <= TOOL_MAX && mx >= 0.95);
    n = requests_to_flag(new_ip, 1.0, &mx);
    printf("anomaly new source address: flagged after %d requests (bound %d)\n", n, IP_MAX);
    LK_CHECK(n <= IP_MAX);
}

static void test_block_and_error_rates(void)
{
    gen_t g;
    double fp;
    int n, nw;
    pa_engine_t *e = trained(&fp, &n, &nw, &g);
    pa_score_t s;
    /* the usual: a few failed answers now and then (2 of 100 per window) */
    for (int w = 0; w < 20; w++)
        pa_errors(e, "default", "key_1", w % 5 == 0 ? 2 : 0, 20);
    next_normal(&g, 1.0);
    pa_score(e, &g.r, &s);
    pa_outcome(e, &g.r, 0, g.cost);
    LK_CHECK(s.score < THRESHOLD);
    /* then every answer fails */
    pa_errors(e, "default", "key_1", 15, 15);
    next_normal(&g, 1.0);
    pa_score(e, &g.r, &s);
    printf("anomaly error burst (15 of 15 answers failed): score %.3f, first reason %s\n", s.score,
           s.n_reasons ? s.reasons[0].k : "-");
    LK_CHECK(s.score >= THRESHOLD && s.n_reasons >= 1 && strcmp(s.reasons[0].k, "error_rate") == 0);
    pa_outcome(e, &g.r, 0, g.cost);
    /* the answers recover; then every request is refused or held by policy */
    pa_errors(e, "default", "key_1", 0, 30);
    next_normal(&g, 1.0);
    pa_score(e, &g.r, &s);
    pa_outcome(e, &g.r, 0, g.cost);
    LK_CHECK(s.score < THRESHOLD);
    int i;
    for (i = 1; i <= 50; i++) {
        next_normal(&g, 1.0);
        pa_score(e, &g.r, &s);
        pa_outcome(e, &g.r, 1, g.cost);
        if (s.n_reasons && strcmp(s.reasons[0].k, "block_rate") == 0 && s.score >= THRESHOLD) break;
    }
    printf("anomaly block burst: block_rate over %.2f after %d blocked requests\n", THRESHOLD, i);
    LK_CHECK(i <= 15);                            /* stated bound */
    pa_errors(e, "default", "key_unknown", 5, 5); /* not in memory: ignored */
    pa_errors(e, "default", "key_1", 6, 5);       /* nonsense: ignored */
    pa_free(&e);
}

static void test_cold_start(void)
{
    pa_engine_t *e = pa_new(NULL, "test");
    pa_request_t r = {.tenant = "default",
                      .key_id = "key_new",
                      .model = "gpt-4o",
                      .source_ip = "10.1.1.1",
                      .est_tokens = 500,
                      .prompt_bytes = 2000,
                      .now_ms = T0 + 10 * 3600000LL};
    r.tools[r.n_tools++] = "search_docs";
    pa_score_t s;
    pa_score(e, &r, &s);
    /* new: not anomalous for being new, but marked cold */
    LK_CHECK(s.score < 0.05 && s.cold && s.n == 0);
    /* a few more ordinary requests, then a destructive tool: modest, non-zero, under the threshold */
    for (int i = 0; i < 5; i++) {
        r.now_ms += 60000;
        pa_score(e, &r, &s);
        LK_CHECK(s.score < 0.2);
    }
    r.now_ms += 60000;
    r.tools[r.n_tools++] = "drop_table";
    pa_score(e, &r, &s);
    printf("anomaly cold start: destructive tool on a 6-request key scores %.3f\n", s.score);
    LK_CHECK(s.score >= 0.3 && s.score < THRESHOLD && s.cold && s.n_reasons >= 1 &&
             strcmp(s.reasons[0].k, "tool") == 0 && strcmp(s.reasons[0].v, "drop_table") == 0);
    /* a brand-new key of an agent with a long history is scored against the agent */
    gen_t g;
    double fp;
    int n, nw;
    pa_engine_t *t = trained(&fp, &n, &nw, &g);
    next_normal(&g, 1.0);
    g.r.key_id = "key_rotated";
    g.r.tools[g.r.n_tools++] = "delete_database";
    pa_score(t, &g.r, &s);
    LK_CHECK(s.agent_subj == 1 && s.score >= 0.95 && !s.cold);
    /* and its ordinary traffic is not flagged */
    next_normal(&g, 1.0);
    g.r.key_id = "key_rotated";
    pa_score(t, &g.r, &s);
    LK_CHECK(s.score < THRESHOLD);
    pa_free(&t);
    pa_free(&e);
}

static void test_state_blobs(void)
{
    gen_t g;
    double fp;
    int n, nw;
    pa_engine_t *e = trained(&fp, &n, &nw, &g);
    pa_free(&e);
    /* a state with content: via a private engine is not reachable, so build one from the codec itself */
    pa_state_t *st = calloc(1, pa_state_size()), *st2 = calloc(1, pa_state_size());
    uint8_t buf[PA_STATE_MAX], buf2[PA_STATE_MAX];
    size_t len = pa_state_encode(st, buf, sizeof buf);
    LK_CHECK(len > 4 && pa_state_decode(buf, len, st2) == 0);
    /* a hand-made blob with categorical values */
    size_t off = 0;
    memcpy(buf2, buf, len);
    off = len - 3 * 9; /* the three empty tables at the end: total (8) + count (1) each */
    double total = 10;
    memcpy(buf2 + off, &total, 8);
    buf2[off + 8] = 1;
    size_t w = off + 9;
    buf2[w++] = 6;
    memcpy(buf2 + w, "gpt-4o", 6), w += 6;
    double c = 7;
    memcpy(buf2 + w, &c, 8), w += 8;
    for (int k = 0; k < 2; k++) {
        memcpy(buf2 + w, &total, 8), w += 8;
        buf2[w++] = 0;
    }
    LK_CHECK(pa_state_decode(buf2, w, st2) == 0);
    size_t len2 = pa_state_encode(st2, buf, sizeof buf);
    LK_CHECK(len2 == w && memcmp(buf, buf2, w) == 0);
    /* every truncation and a trailing byte are refused */
    int refused = 1;
    for (size_t i = 0; i < w; i++)
        refused &= pa_state_decode(buf2, i, st2) == -1;
    LK_CHECK(refused);
    buf2[w] = 0;
    LK_CHECK(pa_state_decode(buf2, w + 1, st2) == -1);
    /* non-finite numbers, oversize lengths */
    uint8_t bad[PA_STATE_MAX];
    memcpy(bad, buf2, w);
    double nan = NAN;
    memcpy(bad + 12, &nan, 8);
    LK_CHECK(pa_state_decode(bad, w, st2) == -1);
    memcpy(bad, buf2, w);
    bad[off + 9] = 200;
    LK_CHECK(pa_state_decode(bad, w, st2) == -1);
    memcpy(bad, buf2, w);
    bad[0] = 'X';
    LK_CHECK(pa_state_decode(bad, w, st2) == -1);
    free(st);
    free(st2);
}

static void test_json(void)
{
    pa_score_t s = {.score = 0.9123, .sum = 2.43, .cold = 0, .n = 812, .n_reasons = 2};
    snprintf(s.reasons[0].k, sizeof s.reasons[0].k, "tool");
    snprintf(s.reasons[0].v, sizeof s.reasons[0].v, "del\"ete\\x\n");
    s.reasons[0].c = 2.0;
    snprintf(s.reasons[1].k, sizeof s.reasons[1].k, "rate");
    s.reasons[1].c = 0.43;
    s.reasons[1].z = 3.1;
    char buf[1024];
    size_t n = pa_score_json(&s, buf, sizeof buf);
    json_t *j = json_loadb(buf, n, 0, NULL);
    LK_CHECK(j && fabs(json_real_value(json_object_get(j, "score")) - 0.9123) < 1e-9);
    LK_CHECK(json_is_false(json_object_get(j, "cold")) && json_integer_value(json_object_get(j, "n")) == 812);
    json_t *r0 = json_array_get(json_object_get(j, "reasons"), 0);
    LK_CHECK(strcmp(json_string_value(json_object_get(r0, "v")), "del\"ete\\x\n") == 0);
    LK_CHECK(json_array_size(json_object_get(j, "reasons")) == 2);
    json_decref(j);
    LK_CHECK(pa_score_json(&s, buf, 20) == 0); /* too small: refused, not cut */
    /* a value cut inside a multibyte character, or not UTF-8 at all, still gives valid JSON */
    snprintf(s.reasons[0].v, sizeof s.reasons[0].v, "ab\xc3\xa9\xff\xe2\x82");
    n = pa_score_json(&s, buf, sizeof buf);
    j = json_loadb(buf, n, 0, NULL);
    LK_CHECK(j &&
             strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "reasons"), 0), "v")),
                    "ab\xc3\xa9???") == 0);
    json_decref(j);
    /* overlong forms, surrogates, beyond U+10FFFF (found by fuzz_anomaly) */
    snprintf(s.reasons[0].v, sizeof s.reasons[0].v, "%s",
             "\xe0\x8a\x8a|\xed\xa0\x80|\xf0\x80\x80\x80|\xf4\x90\x80\x80|\xe2\x82\xac");
    n = pa_score_json(&s, buf, sizeof buf);
    j = json_loadb(buf, n, 0, NULL);
    LK_CHECK(j &&
             strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "reasons"), 0), "v")),
                    "???|???|????|????|\xe2\x82\xac") == 0);
    json_decref(j);
    /* features from bodies of every API */
    const char *chat =
        "{\"model\":\"m\",\"max_tokens\":100,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"get_weather\"}}],\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{"
        "\"name\":\"delete_database\",\"arguments\":\"{}\"}}]}]}";
    pa_request_t r = {0};
    char names[PA_MAX_TOOLS][PA_VALUE_MAX];
    pa_extract(chat, strlen(chat), &r, names);
    LK_CHECK(r.n_tools == 2 && strcmp(r.tools[0], "get_weather") == 0 &&
             strcmp(r.tools[1], "delete_database") == 0);
    LK_CHECK(r.est_tokens == (int64_t)strlen(chat) / 4 + 100 && r.prompt_bytes == (int64_t)strlen(chat));
    const char *anth =
        "{\"model\":\"c\",\"tools\":[{\"name\":\"a\"}],\"messages\":[{\"role\":\"assistant\",\"content\":"
        "[{\"type\":\"tool_use\",\"name\":\"b\",\"input\":{}}]}]}";
    pa_extract(anth, strlen(anth), &r, names);
    LK_CHECK(r.n_tools == 2 && strcmp(r.tools[1], "b") == 0);
    const char *resp = "{\"model\":\"r\",\"input\":[{\"type\":\"function_call\",\"name\":\"c\"}]}";
    pa_extract(resp, strlen(resp), &r, names);
    LK_CHECK(r.n_tools == 1 && strcmp(r.tools[0], "c") == 0);
    /* escaped quotes inside content are not keys; schema keys called "name" are not values; bounded */
    const char *tricky =
        "{\"messages\":[{\"content\":\"say \\\"name\\\": \\\"evil\\\"\"}],\"tools\":[{"
        "\"name\" : \"ok_tool\",\"parameters\":{\"properties\":{\"name\":{\"type\":\"string\"}}}}],"
        "\"max_tokens\": 50, \"x\":{\"name\":\"cut";
    pa_extract(tricky, strlen(tricky), &r, names);
    LK_CHECK(r.n_tools == 1 && strcmp(r.tools[0], "ok_tool") == 0 &&
             r.est_tokens == (int64_t)strlen(tricky) / 4 + 50);
    pa_extract("not json", 8, &r, names);
    LK_CHECK(r.n_tools == 0 && r.prompt_bytes == 8);
}

static void test_eviction(void)
{
    setenv("LUMKEY_ANOMALY_MAX_SUBJECTS", "100", 1);
    pa_engine_t *e = pa_new(NULL, "test");
    unsetenv("LUMKEY_ANOMALY_MAX_SUBJECTS");
    char key[32];
    pa_request_t r = {.tenant = "t", .model = "m", .now_ms = T0};
    pa_score_t s;
    for (int i = 0; i < 150; i++) {
        snprintf(key, sizeof key, "key_%d", i);
        r.key_id = key;
        pa_score(e, &r, &s);
    }
    LK_CHECK(pa_subjects(e) == 150);
    pa_evict(e); /* without a database nothing is ever written: all stay dirty, none may go */
    LK_CHECK(pa_subjects(e) == 150);
    pa_free(&e);
}

int main(void)
{
    LK_RUN(test_replay_false_positives);
    LK_RUN(test_attacks);
    LK_RUN(test_block_and_error_rates);
    LK_RUN(test_cold_start);
    LK_RUN(test_state_blobs);
    LK_RUN(test_json);
    LK_RUN(test_eviction);
    return LK_TEST_DONE();
}
