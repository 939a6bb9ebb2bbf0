/*  fuzz_anomaly - policy_anomaly's two parsers on arbitrary bytes (issue 10).
 *  First byte 'S': the rest is a baseline blob (anomaly_baselines.state):
 *  pa_state_decode never reads past the end, and what it accepts re-encodes to
 *  the same bytes. Otherwise the rest is a request body: pa_extract never reads
 *  past the end, its tool names are bounded and NUL-terminated, and scoring the
 *  request yields a score in [0, 1] whose JSON is well-formed. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy_anomaly.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    if (data[0] == 'S') {
        pa_state_t *st = malloc(pa_state_size());
        static uint8_t out[PA_STATE_MAX];
        if (st && pa_state_decode(data + 1, size - 1, st) == 0) {
            size_t n = pa_state_encode(st, out, sizeof out);
            if (n != size - 1 || memcmp(out, data + 1, n) != 0) abort();
        }
        free(st);
        return 0;
    }
    /* a private copy, so that a read past the end is caught */
    char *body = malloc(size - 1 ? size - 1 : 1);
    if (!body) return 0;
    memcpy(body, data + 1, size - 1);
    static char names[PA_MAX_TOOLS][PA_VALUE_MAX];
    pa_request_t r = {.tenant = "t",
                      .key_id = "key_1",
                      .agent = "a",
                      .model = "m",
                      .source_ip = "10.0.0.1",
                      .now_ms = 1767571200000LL};
    pa_extract(body, size - 1, &r, names);
    if (r.n_tools > PA_MAX_TOOLS || r.prompt_bytes != (int64_t)(size - 1) ||
        r.est_tokens < r.prompt_bytes / 4)
        abort();
    for (size_t i = 0; i < r.n_tools; i++)
        if (!r.tools[i][0] || strlen(r.tools[i]) >= PA_VALUE_MAX) abort();
    static pa_engine_t *e;
    if (!e) e = pa_new(NULL, "fuzz");
    pa_score_t s;
    pa_score(e, &r, &s);
    if (!(s.score >= 0 && s.score <= 1)) abort();
    char js[1024];
    size_t n = pa_score_json(&s, js, sizeof js);
    if (!n) abort();
    json_t *j = json_loadb(js, n, 0, NULL);
    if (!json_is_object(j)) abort();
    json_decref(j);
    pa_outcome(e, &r, body[0] & 1, 10);
    free(body);
    return 0;
}
