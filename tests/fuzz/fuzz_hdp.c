/*  fuzz_hdp - the HDP-Token header parser and verifier (lk_hdp).
 *
 *  Input: an HDP-Token header value. It is verified against one trusted issuer
 *  (kid "unit-key", the test vectors' public key) with a tool list; the
 *  result must be a JSON object with a reason. When the input (or its base64url
 *  decoding) is JSON, its RFC 8785 form must be a fixed point: canonicalizing
 *  the canonical text again gives the same bytes.
 *  regress_empty_object: found by the fuzzer (UBSan: qsort of no members).
 *  regress_big_number: found by the fuzzer (a harness bug: the re-parse took
 *  JCS's 21-digit integer form of a double as a too-big integer).
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_hdp.h"

static int lookup(void *ud, const char *kid, lk_hdp_issuer_t *out)
{
    (void)ud;
    if (strcmp(kid, "unit-key") != 0) return kid[0] == 'x' ? -1 : 0;
    snprintf(out->name, sizeof out->name, "fuzz");
    return lk_hdp_parse_pubkey("A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg", out->pk) == 0 ? 1 : -1;
}

static void jcs_fixed_point(const json_t *j)
{
    size_t n1 = 0, n2 = 0;
    char *c1 = lk_hdp_jcs(j, &n1);
    if (!c1) return;
    /* canonical text must parse; as reals, since JCS writes 3.3e19 as 33333330000000000000,
     * which jansson would refuse as a 64-bit integer */
    json_t *k = json_loadb(c1, n1, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, NULL);
    if (!k) abort();
    char *c2 = lk_hdp_jcs(k, &n2);
    if (!c2 || n1 != n2 || memcmp(c1, c2, n1) != 0) abort();
    free(c2);
    json_decref(k);
    free(c1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const defs[] = {"web_search", "shell"};
    static const char *const calls[] = {"file_reader"};
    lk_hdp_tools_t tools = {defs, 2, calls, 1};
    lk_hdp_facts_t f;
    json_t *r = lk_hdp_verify((const char *)data, size, 1800000000000LL, lookup, NULL, &tools, &f);
    if (r) {
        if (!json_is_string(json_object_get(r, "reason")) || !f.present) abort();
        if (f.verified != json_is_true(json_object_get(r, "verified"))) abort();
        char *s = json_dumps(r, 0);
        if (!s) abort();
        free(s);
        json_decref(r);
    }
    lk_hdp_reason_t why;
    json_t *t = lk_hdp_decode((const char *)data, size, &why);
    if (t) {
        jcs_fixed_point(t);
        json_decref(t);
    }
    return 0;
}
