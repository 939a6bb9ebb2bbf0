/*  bench_anomaly - the anomaly scoring cost per request (issue 10). A
 *  benchmark, not a test: it prints figures and asserts nothing.
 *
 *  Measures, over 1,000 keys (each with its agent) warmed with 200 requests:
 *    score    pa_score + pa_outcome (what DECIDE adds once features are known)
 *    extract  pa_extract on a typical chat body with tools (one scan)
 *    call     pa_call_begin + pa_call_end (everything policy.c does per DECIDE)
 *
 *  usage: bench_anomaly [requests (default 200000)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_util.h"
#include "policy_anomaly.h"

#define KEYS 1000

static const char BODY[] =
    "{\"model\":\"gpt-4o-mini\",\"max_tokens\":400,\"messages\":[{\"role\":\"system\",\"content\":\"You are "
    "a "
    "billing assistant. Answer briefly.\"},{\"role\":\"user\",\"content\":\"What is the status of invoice "
    "INV-2291 and can you open a ticket if it is overdue?\"},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":"
    "\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_invoice\",\"arguments\":\"{\\\"id\\\":"
    "\\\"INV-2291\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"{\\\"status\\\":"
    "\\\"overdue\\\"}\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_invoice\","
    "\"parameters\":"
    "{}}},{\"type\":\"function\",\"function\":{\"name\":\"create_ticket\",\"parameters\":{}}},{\"type\":"
    "\"function\",\"function\":{\"name\":\"search_docs\",\"parameters\":{}}}]}";

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n < 1000) n = 1000;
    pa_engine_t *e = pa_new(NULL, "bench");
    char keys[KEYS][16], agents[KEYS][16];
    for (int k = 0; k < KEYS; k++) {
        snprintf(keys[k], sizeof keys[k], "key_%04d", k);
        snprintf(agents[k], sizeof agents[k], "agent_%03d", k % 100);
    }
    pa_request_t r = {.tenant = "default",
                      .model = "gpt-4o-mini",
                      .source_ip = "10.0.0.7",
                      .est_tokens = 900,
                      .prompt_bytes = 3400};
    r.tools[r.n_tools++] = "get_invoice";
    r.tools[r.n_tools++] = "create_ticket";
    r.tools[r.n_tools++] = "search_docs";
    int64_t now = 1767600000000LL;
    pa_score_t s;
    for (int i = 0; i < 200 * KEYS; i++) { /* warm: every key has a mature baseline */
        r.key_id = keys[i % KEYS];
        r.agent = agents[i % KEYS];
        r.now_ms = now + i * 10;
        pa_score(e, &r, &s);
        pa_outcome(e, &r, 0, 1000);
    }
    now += 200 * KEYS * 10;

    int64_t t0 = lk_mono_us();
    for (long i = 0; i < n; i++) {
        r.key_id = keys[i % KEYS];
        r.agent = agents[i % KEYS];
        r.now_ms = now + i * 10;
        pa_score(e, &r, &s);
        pa_outcome(e, &r, 0, 1000);
    }
    double score_ns = (double)(lk_mono_us() - t0) * 1000.0 / (double)n;
    now += n * 10;

    t0 = lk_mono_us();
    long ext = n / 4;
    for (long i = 0; i < ext; i++) {
        pa_request_t x = {0};
        static char names[PA_MAX_TOOLS][PA_VALUE_MAX];
        pa_extract(BODY, sizeof BODY - 1, &x, names);
    }
    double extract_ns = (double)(lk_mono_us() - t0) * 1000.0 / (double)ext;

    static pa_call_t call;
    t0 = lk_mono_us();
    for (long i = 0; i < ext; i++) {
        char *k = keys[i % KEYS], *a = agents[i % KEYS];
        pa_call_begin(e, &call, lk_str("default"), lk_str(k), lk_str(a), lk_str("gpt-4o-mini"),
                      lk_str("10.0.0.7"), (lk_str_t){BODY, sizeof BODY - 1}, now + i * 10);
        pa_call_end(e, &call, 0, 1000);
    }
    double call_ns = (double)(lk_mono_us() - t0) * 1000.0 / (double)ext;

    printf("bench_anomaly: %d keys (+%d agents), %ld scored requests\n", KEYS, 100, n);
    printf("  score (pa_score + pa_outcome, 2 baselines):   %8.0f ns/request\n", score_ns);
    printf("  extract (pa_extract, %zu-byte chat body):     %8.0f ns/request\n", sizeof BODY - 1, extract_ns);
    printf("  call (extract + score + JSON, as DECIDE):      %8.0f ns/request\n", call_ns);
    printf("  last: %s\n", call.out);
    pa_free(&e);
    return 0;
}
