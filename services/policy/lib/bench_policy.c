/*  bench_policy - evaluation time per request of a 20-rule policy with PII
 *  detectors on 1 KB, 16 KB and 128 KB prompts (not a test; docs/policy.md).
 *
 *    build/services/policy/lib/bench_policy
 *
 *  PCRE2 (the engine lk_policy uses): the whole lk_policy_eval_request, parse +
 *  view + scan + redaction + dump. With Hyperscan installed (LK_BENCH_HS), the
 *  scan alone of equivalent patterns in one Hyperscan database, for comparison.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lk_policy.h"
#ifdef LK_BENCH_HS
#include <hs/hs.h>
#endif

static const char *rx[] = {"(?i)ignore (all )?previous instructions",
                           "(?i)disregard (the )?(system|above) prompt",
                           "(?i)you are now (DAN|in developer mode)",
                           "(?i)password\\\\s*[:=]",
                           "(?i)BEGIN (RSA|EC) PRIVATE",
                           "(?i)rm -rf /",
                           "(?i)drop table [a-z_]+",
                           "(?i)curl [^ ]+ *\\\\| *sh",
                           "(?i)confidential|internal only",
                           "(?i)social security number",
                           "(?i)wire transfer to",
                           "(?i)exfiltrat(e|ion)"};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *make_policy(void)
{
    char *d = malloc(16384), *w = d;
    w += sprintf(w, "{\"rules\":[");
    for (size_t i = 0; i < sizeof rx / sizeof *rx; i++)
        w += sprintf(w, "{\"id\":\"t%zu\",\"when\":{\"text\":{\"regex\":[\"%s\"]}},\"action\":\"%s\"},", i,
                     rx[i], i % 2 ? "block" : "log");
    w += sprintf(
        w, "{\"id\":\"pii\",\"when\":{\"pii\":[\"email\",\"phone\",\"card\",\"ssn\",\"iban\",\"ip\"]},"
           "\"action\":\"redact\"},"
           "{\"id\":\"sec\",\"when\":{\"pii\":[\"secret\",\"private_key\",\"jwt\"]},\"action\":\"block\"},"
           "{\"id\":\"del\",\"when\":{\"tool\":{\"name\":[\"delete_*\"]}},\"action\":\"hold\"},"
           "{\"id\":\"etc\",\"when\":{\"tool\":{\"args\":[{\"path\":\"path\",\"regex\":\"^/etc\"}]}},"
           "\"action\":\"block\"},"
           "{\"id\":\"fin\",\"when\":{\"model\":[\"gpt-4o*\"],\"metadata\":{\"team\":[\"finance\"]}},"
           "\"action\":\"log\"},"
           "{\"id\":\"big\",\"when\":{\"tokens_over\":100000},\"action\":\"log\"},"
           "{\"id\":\"cost\",\"when\":{\"cost_over_usd\":5},\"action\":\"block\"},"
           "{\"id\":\"prod\",\"when\":{\"header\":{\"x-run\":[\"*prod*\"]}},\"action\":\"log\"}"
           "],\"prices\":{\"gpt-4o*\":{\"input_per_mtok\":2.5,\"output_per_mtok\":10}}}");
    return d;
}

static char *make_prompt(size_t n, size_t *text_len)
{
    static const char words[] = "The quarterly report shows revenue of 1234 units across 56 regions and we "
                                "expect growth; contact the team lead for details. ";
    char *b = malloc(n + 512), *w = b;
    w += sprintf(w,
                 "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"You are helpful.\"},"
                 "{\"role\":\"user\",\"content\":\"");
    char *t0 = w;
    for (size_t i = 0; i < n; i++)
        *w++ = words[i % (sizeof words - 1)];
    w += sprintf(w, " mail jane@example.com\"}]}");
    *text_len = (size_t)(w - t0);
    return b;
}

#ifdef LK_BENCH_HS
static int on_hs(unsigned id, unsigned long long from, unsigned long long to, unsigned flags, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

static const char *hs_pii[] = {
    /* the detectors without lookarounds and with open bounds (Hyperscan limits) */
    "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,24}",
    "\\+\\d{1,3}[ .-]?(\\(\\d{1,4}\\)[ .-]?)?\\d{1,4}([ .-]?\\d{2,4}){2,4}|\\(\\d{3}\\)[ .-]?\\d{3}[ "
    ".-]\\d{4}|\\d{3}[.-]"
    "\\d{3}[.-]\\d{4}",
    "\\d([ -]?\\d){12,18}",
    "\\d{3}-\\d{2}-\\d{4}",
    "[A-Z]{2}\\d{2}( ?[A-Z0-9]){11,30}",
    "\\d{1,3}(\\.\\d{1,3}){3}|[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}",
    "sk-(ant-|proj-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abpr]-[A-Za-z0-9-]{"
    "10,}|"
    "AIza[0-9A-Za-z_-]{35}|lk_(live|test|adm)_[A-Za-z0-9_]{16,}",
    "-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "eyJ[A-Za-z0-9_-]+\\.eyJ[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+",
};
#endif

int main(void)
{
    char *pd = make_policy();
    lk_policy_error_t err;
    setenv("LUMKEY_POLICY_HYPERSCAN", "1", 1); /* the prefilter is opt-in */
    lk_policy_t *p = lk_policy_compile(pd, strlen(pd), &err);
    setenv("LK_POLICY_NO_HS", "1", 1);
    lk_policy_t *p_pcre = lk_policy_compile(pd, strlen(pd), &err);
    unsetenv("LK_POLICY_NO_HS");
    if (!p || !p_pcre) {
        fprintf(stderr, "policy: %s: %s\n", err.path, err.msg);
        return 1;
    }
    const char *hdr[1][2] = {{"x-run", "dev"}};
    lk_policy_ctx_t ctx = {.api = LK_API_CHAT, .team = "ops", .headers = hdr, .n_headers = 1};
    size_t sizes[] = {1024, 16 * 1024, 128 * 1024};
    int iters[] = {4000, 400, 50};
#ifdef LK_BENCH_HS
    const char *all[32];
    unsigned ids[32], flags[32];
    unsigned n = 0;
    for (size_t i = 0; i < sizeof rx / sizeof *rx; i++)
        all[n] = NULL, n++;
    char conv[16][128];
    for (size_t i = 0; i < sizeof rx / sizeof *rx;
         i++) { /* the rule regexes minus (?i), and \\s in JSON escapes */
        const char *s = rx[i] + 4;
        char *o = conv[i];
        for (; *s; s++)
            if (!(s[0] == '\\' && s[1] == '\\')) *o++ = *s;
        *o = 0;
        all[i] = conv[i];
        flags[i] = HS_FLAG_CASELESS | HS_FLAG_SOM_LEFTMOST;
    }
    for (size_t i = 0; i < sizeof hs_pii / sizeof *hs_pii; i++) {
        all[n] = hs_pii[i];
        flags[n] = HS_FLAG_SOM_LEFTMOST;
        n++;
    }
    for (unsigned i = 0; i < n; i++)
        ids[i] = i;
    hs_database_t *db = NULL;
    hs_compile_error_t *ce = NULL;
    hs_scratch_t *scratch = NULL;
    if (hs_compile_multi(all, flags, ids, n, HS_MODE_BLOCK, NULL, &db, &ce) != HS_SUCCESS) {
        fprintf(stderr, "hyperscan: pattern %d: %s\n", ce->expression, ce->message);
        return 1;
    }
    hs_alloc_scratch(db, &scratch);
#endif
    printf("%-8s %-10s %12s %12s\n", "prompt", "engine", "us/request", "MB/s");
    for (int k = 0; k < 3; k++) {
        size_t tl;
        char *body = make_prompt(sizes[k], &tl);
        size_t bl = strlen(body);
        lk_policy_result_t r;
        double us = 0, t0;
        for (int e = 0; e < 2; e++) {
            const lk_policy_t *pp = e ? p_pcre : p;
            t0 = now();
            for (int i = 0; i < iters[k]; i++) {
                if (lk_policy_eval_request(pp, &ctx, body, bl, &r) != 0 || r.action != LK_ACT_REDACT) {
                    fprintf(stderr, "unexpected result %s %s\n", lk_policy_action_name(r.action), r.message);
                    return 1;
                }
                lk_policy_result_clear(&r);
            }
            us = (now() - t0) * 1e6 / iters[k];
            printf("%-7zuK %-10s %12.1f %12.1f   (lk_policy_eval_request)\n", sizes[k] / 1024,
                   e ? "pcre2-jit" : "hs+pcre2", us, (double)bl / us);
        }
#ifdef LK_BENCH_HS
        int hits = 0;
        t0 = now();
        for (int i = 0; i < iters[k]; i++)
            hs_scan(db, body, (unsigned)bl, 0, scratch, on_hs, &hits);
        us = (now() - t0) * 1e6 / iters[k];
        printf("%-7zuK %-10s %12.1f %12.1f   (hs_scan only, %d matches/iter)\n", sizes[k] / 1024, "hyperscan",
               us, (double)bl / us, hits / iters[k]);
#endif
        free(body);
    }
    lk_policy_free(&p);
    lk_policy_free(&p_pcre);
    free(pd);
    return 0;
}
