/*  policy_json - the JSON shapes the tools around the library share: API
 *  names, a test context given as JSON, and a decision as JSON. One place,
 *  so that `lumkeyctl policy test` (local), the admin API's policies.test,
 *  the policy worker and the edge agree. */
#include <string.h>

#include "lk_policy.h"

static const struct {
    const char *name;
    lk_api_t api;
} APIS[] = {{"chat.completions", LK_API_CHAT},
            {"messages", LK_API_MESSAGES},
            {"responses", LK_API_RESPONSES},
            {"embeddings", LK_API_EMBEDDINGS}};

lk_api_t lk_policy_api_of(const char *endpoint)
{
    for (size_t i = 0; endpoint && i < sizeof APIS / sizeof APIS[0]; i++)
        if (strcmp(endpoint, APIS[i].name) == 0) return APIS[i].api;
    return 0;
}

const char *lk_policy_api_name(lk_api_t api)
{
    for (size_t i = 0; i < sizeof APIS / sizeof APIS[0]; i++)
        if (APIS[i].api == api) return APIS[i].name;
    return "chat.completions";
}

void lk_policy_ctx_from_json(const json_t *cx, lk_api_t api, lk_policy_ctx_t *ctx,
                             const char *headers[LK_POLICY_CTX_MAX_HEADERS][2])
{
    size_t nh = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(cx, "headers"), k,
                        v) if (nh < LK_POLICY_CTX_MAX_HEADERS && json_is_string(v))
    {
        headers[nh][0] = k;
        headers[nh][1] = json_string_value(v);
        nh++;
    }
    *ctx = (lk_policy_ctx_t){.api = api,
                             .provider_id = json_string_value(json_object_get(cx, "provider_id")),
                             .provider_kind = json_string_value(json_object_get(cx, "provider")),
                             .key_id = json_string_value(json_object_get(cx, "key_id")),
                             .user = json_string_value(json_object_get(cx, "user")),
                             .agent = json_string_value(json_object_get(cx, "agent")),
                             .team = json_string_value(json_object_get(cx, "team")),
                             .headers = (const char *const(*)[2])headers,
                             .n_headers = nh};
    /* a test score: {"anomaly": {"score": 0.9, "reasons": ["tool"]}} (issue 10) */
    json_t *an = json_object_get(cx, "anomaly");
    if (json_is_number(json_object_get(an, "score"))) {
        ctx->has_anomaly = 1;
        ctx->anomaly_score = json_number_value(json_object_get(an, "score"));
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(an, "reasons"), i, e) ctx->anomaly_reasons |=
            lk_policy_anomaly_reason(json_string_value(e));
    }
}

json_t *lk_policy_result_json(const lk_policy_result_t *r, int answer_side)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i}", "side", answer_side ? "answer" : "request", "action",
                          lk_policy_action_name(r->action), "would", lk_policy_action_name(r->would), "rule",
                          r->rule_id, "message", r->message, "redactions", r->redactions);
    if (!o) return NULL;
    if (r->body) {
        json_t *b = json_loadb(r->body, r->body_len, 0, NULL);
        json_object_set_new(o, "body", b ? b : json_stringn(r->body, r->body_len));
    }
    if (!answer_side)
        json_object_set_new(o, "estimates",
                            json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)r->est_prompt_tokens,
                                      "max_tokens", (json_int_t)r->est_max_tokens, "microusd",
                                      (json_int_t)r->est_microusd));
    return o;
}
