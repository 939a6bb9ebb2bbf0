/*  policy_hs - the one multi-pattern prefilter of a policy (Hyperscan).
 *
 *  Every pattern of the policy (rule regexes and PII detectors) goes into one
 *  Hyperscan block-mode database compiled with HS_FLAG_PREFILTER: one scan of a
 *  string tells which patterns may match it; PCRE2 then confirms (exact
 *  spans, lookarounds, validators) only those. A pattern Hyperscan refuses even
 *  as a prefilter is always run by PCRE2. Without Hyperscan (LK_POLICY_HS
 *  undefined) every pattern runs under PCRE2.
 */
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

#ifdef LK_POLICY_HS
#include <hs/hs.h>

static __thread hs_scratch_t *tls_scratch; /* per thread, grown to fit every policy's database */

void policy_hs_build(lk_policy_t *p)
{
    /* opt-in (docs/policy.md "Engine"): compiling the database costs ~0.3 s per policy version, which would
     * stall the worker's and the edge's single event loop; PCRE2 alone compiles in ~10 ms */
    const char *on = getenv("LUMKEY_POLICY_HYPERSCAN");
    if (!on || strcmp(on, "1") != 0 || getenv("LK_POLICY_NO_HS")) return;
    size_t n = p->n_pats;
    const char **exprs = calloc(n + 1, sizeof *exprs);
    unsigned *flags = calloc(n + 1, sizeof *flags), *ids = calloc(n + 1, sizeof *ids);
    unsigned char *skip = calloc(n + 1, 1);
    if (!exprs || !flags || !ids || !skip) goto done;
    for (;;) {
        unsigned k = 0;
        for (size_t i = 0; i < n; i++) {
            if (skip[i] || !p->pats[i].src) continue;
            exprs[k] = p->pats[i].src;
            flags[k] = HS_FLAG_PREFILTER | HS_FLAG_SINGLEMATCH | HS_FLAG_UTF8 | HS_FLAG_ALLOWEMPTY;
            ids[k] = (unsigned)i;
            k++;
        }
        if (k == 0) break;
        hs_database_t *db = NULL;
        hs_compile_error_t *ce = NULL;
        if (hs_compile_multi(exprs, flags, ids, k, HS_MODE_BLOCK, NULL, &db, &ce) == HS_SUCCESS) {
            p->hs_db = db;
            for (unsigned j = 0; j < k; j++)
                p->pats[ids[j]].in_hs = 1;
            break;
        }
        int bad = ce ? ce->expression : -1;
        hs_free_compile_error(ce);
        if (bad < 0 || (unsigned)bad >= k) break; /* the whole database failed: PCRE2 only */
        skip[ids[bad]] = 1;                       /* that pattern runs under PCRE2 alone */
    }
done:
    free(exprs);
    free(flags);
    free(ids);
    free(skip);
}

void policy_hs_free(lk_policy_t *p)
{
    hs_free_database(p->hs_db);
    p->hs_db = NULL;
}

static int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned fl, void *ctx)
{
    ((unsigned char *)ctx)[id] = 1;
    return 0;
}

int policy_hs_candidates(const lk_policy_t *p, const char *s, size_t len, unsigned char *cand)
{
    if (!p->hs_db || len > 0xffffffffu) return -1;
    if (hs_alloc_scratch(p->hs_db, &tls_scratch) != HS_SUCCESS) return -1;
    memset(cand, 0, p->n_pats);
    if (hs_scan(p->hs_db, s, (unsigned)len, 0, tls_scratch, on_match, cand) != HS_SUCCESS) return -1;
    return 0;
}

#else

void policy_hs_build(lk_policy_t *p)
{
    (void)p;
}

void policy_hs_free(lk_policy_t *p)
{
    (void)p;
}

int policy_hs_candidates(const lk_policy_t *p, const char *s, size_t len, unsigned char *cand)
{
    return -1;
}

#endif
