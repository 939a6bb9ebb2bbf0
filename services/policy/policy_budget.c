/*  policy_budget - budgets and rate limits that cannot be overshot.
 *
 *  Every limit is a counter row per (scope, kind, window) in PostgreSQL.
 *  A request reserves its maximum on every limited counter in one
 *  transaction: each reservation is an upsert that only updates while the
 *  counter stays within its limit (ON CONFLICT DO UPDATE ... WHERE sees the
 *  latest committed value under the row lock), so any number of policy
 *  workers reserving at once can never pass a limit together. If one counter
 *  refuses, the transaction rolls back and nothing is reserved. Counters are
 *  always taken in the same order (req, tok, usd_day, usd_month), so two
 *  reservations cannot deadlock.
 *
 *  Windows: the minute (requests, tokens), the UTC day and the UTC month,
 *  all from the database clock. Settling replaces the reserved tokens and
 *  cost by the real usage once the request ends; a request that never settles
 *  keeps its maximum.
 */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "lk_log.h"
#include "policy.h"

/* $1 scope, $2 kind, $3 window unit ('minute', 'day', 'month'), $4 amount, $5 limit. Returns the
 * window and the new value, or no row when the limit would be passed. */
static const char SQL_RESERVE[] =
    "INSERT INTO budget_counters AS b (scope, kind, window_start, used) "
    "VALUES ($1, $2, date_trunc($3, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', $4::bigint) "
    "ON CONFLICT (scope, kind, window_start) DO UPDATE SET used = b.used + EXCLUDED.used "
    "WHERE b.used + EXCLUDED.used <= $5::bigint "
    "RETURNING window_start::text, used";

static const char SQL_RESERVED_ALREADY[] = "SELECT 1 FROM budget_reservations WHERE request_id = $1";

/* $1 rid, $2 scope, $3 tok window, $4 day window, $5 month window, $6 tokens, $7 microusd, $8 model,
 * $9 price in, $10 price out */
static const char SQL_RECORD[] =
    "INSERT INTO budget_reservations (request_id, scope, tok_window, day_window, month_window, tokens, "
    "microusd, model, price_in, price_out) VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz, "
    "$5::text::timestamptz, "
    "$6::bigint, $7::bigint, $8, $9::text::float8, $10::text::float8) ON CONFLICT (request_id) DO NOTHING";

static const char SQL_SETTLE_TAKE[] =
    "UPDATE budget_reservations SET settled_at = now() WHERE request_id = $1 AND settled_at IS NULL "
    "RETURNING scope, tok_window::text, day_window::text, month_window::text, tokens, microusd, price_in, "
    "price_out";

/* $1 scope, $2 kind, $3 window, $4 delta */
static const char SQL_ADJUST[] = "UPDATE budget_counters SET used = GREATEST(used + $4::bigint, 0) "
                                 "WHERE scope = $1 AND kind = $2 AND window_start = $3::text::timestamptz";

int policy_budget_prepare(lk_db_t *db)
{
    return lk_db_prepare(db, "budget_reserve", SQL_RESERVE) != 0 ||
                   lk_db_prepare(db, "budget_reserved", SQL_RESERVED_ALREADY) != 0 ||
                   lk_db_prepare(db, "budget_record", SQL_RECORD) != 0 ||
                   lk_db_prepare(db, "budget_settle_take", SQL_SETTLE_TAKE) != 0 ||
                   lk_db_prepare(db, "budget_adjust", SQL_ADJUST) != 0
               ? -1
               : 0;
}

typedef struct {
    const char *kind, *unit, *code, *what;
    int64_t limit, amount;
    char window[64]; /* filled when reserved */
} counter_t;

/* One counter: 1 reserved, 0 refused, -1 database error (*rc). */
static int reserve_one(lk_db_t *db, const char *scope, counter_t *c, lk_db_rc_t *rc)
{
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, scope);
    lk_db_param_cstr(&p, c->kind);
    lk_db_param_cstr(&p, c->unit);
    lk_db_param_i64(&p, c->amount);
    lk_db_param_i64(&p, c->limit);
    PGresult *res = NULL;
    *rc = lk_db_exec(db, "budget_reserve", &p, &res);
    if (*rc != LK_DB_OK) return -1;
    int ok = PQntuples(res) == 1;
    if (ok) lk_str_copy(c->window, sizeof c->window, lk_db_str(res, 0, 0));
    PQclear(res);
    return ok;
}

policy_budget_rc_t policy_budget_reserve(lk_db_t *db, lk_str_t rid, const lk_policy_limits_t *lim,
                                         const policy_budget_req_t *b, const char **code, char *msg,
                                         size_t msg_cap, lk_db_rc_t *rc)
{
    counter_t cs[] = {
        {"req", "minute", "rate_limit_exceeded", "requests per minute", lim->requests_per_minute, 1, ""},
        {"tok", "minute", "rate_limit_exceeded", "tokens per minute", lim->tokens_per_minute, b->tokens, ""},
        {"usd_day", "day", "budget_exceeded", "spend per day", lim->microusd_per_day, b->microusd, ""},
        {"usd_month", "month", "budget_exceeded", "spend per month", lim->microusd_per_month, b->microusd,
         ""},
    };
    size_t n = sizeof cs / sizeof cs[0];
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        if (cs[i].limit <= 0) continue;
        any = 1;
        if (cs[i].amount < 0) { /* a spend limit and no price for the model: cannot promise, refuse */
            *code = "budget_exceeded";
            snprintf(msg, msg_cap,
                     "This key has a spend limit and its policy has no price for this model, so the request "
                     "cannot be admitted.");
            return BUDGET_REFUSED;
        }
        if (cs[i].amount > cs[i].limit) {
            *code = cs[i].code;
            snprintf(msg, msg_cap, "This request alone would exceed the %s limit of this key's policy.",
                     cs[i].what);
            return BUDGET_REFUSED;
        }
    }
    if (!any) return BUDGET_NONE;

    *rc = lk_db_begin(db);
    if (*rc != LK_DB_OK) return BUDGET_DB_ERROR;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, rid);
    PGresult *res = NULL;
    *rc = lk_db_exec(db, "budget_reserved", &p, &res);
    if (*rc != LK_DB_OK) goto db_error;
    int already = PQntuples(res) > 0;
    PQclear(res);
    if (already) { /* a retried DECIDE: reserved the first time */
        lk_db_rollback(db);
        return BUDGET_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (cs[i].limit <= 0) continue;
        int r = reserve_one(db, b->scope, &cs[i], rc);
        if (r < 0) goto db_error;
        if (r == 0) {
            lk_db_rollback(db);
            *code = cs[i].code;
            snprintf(msg, msg_cap, "The %s limit of this key's policy is used up; try again later.",
                     cs[i].what);
            return BUDGET_REFUSED;
        }
    }
    lk_db_params_init(&p);
    lk_db_param_str(&p, rid);
    lk_db_param_cstr(&p, b->scope);
    for (size_t i = 1; i < n; i++) /* tok, day, month windows */
        if (cs[i].window[0])
            lk_db_param_cstr(&p, cs[i].window);
        else
            lk_db_param_null(&p);
    lk_db_param_i64(&p, cs[1].window[0] ? b->tokens : 0);
    lk_db_param_i64(&p, (cs[2].window[0] || cs[3].window[0]) ? b->microusd : 0);
    lk_db_param_cstr(&p, b->model ? b->model : "");
    char pin[32], pout[32];
    if (b->price_in >= 0 && b->price_out >= 0) {
        snprintf(pin, sizeof pin, "%.17g", b->price_in);
        snprintf(pout, sizeof pout, "%.17g", b->price_out);
        lk_db_param_cstr(&p, pin);
        lk_db_param_cstr(&p, pout);
    } else {
        lk_db_param_null(&p);
        lk_db_param_null(&p);
    }
    res = NULL;
    *rc = lk_db_exec(db, "budget_record", &p, &res);
    PQclear(res);
    if (*rc != LK_DB_OK) goto db_error;
    *rc = lk_db_commit(db);
    if (*rc != LK_DB_OK) return BUDGET_DB_ERROR;
    return BUDGET_OK;
db_error:
    lk_db_rollback(db);
    return BUDGET_DB_ERROR;
}

static lk_db_rc_t adjust(lk_db_t *db, lk_str_t scope, const char *kind, lk_str_t window, int64_t delta)
{
    if (window.len == 0 || delta == 0) return LK_DB_OK;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, scope);
    lk_db_param_cstr(&p, kind);
    lk_db_param_str(&p, window);
    lk_db_param_i64(&p, delta);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(db, "budget_adjust", &p, &res);
    PQclear(res);
    return rc;
}

lk_db_rc_t policy_budget_settle(lk_db_t *db, lk_str_t rid, int64_t prompt_tokens, int64_t completion_tokens,
                                int64_t *microusd)
{
    *microusd = -1;
    if (prompt_tokens < 0 || completion_tokens < 0) return LK_DB_OK; /* unknown: the maximum stays reserved */
    lk_db_rc_t rc = lk_db_begin(db);
    if (rc != LK_DB_OK) return rc;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, rid);
    PGresult *res = NULL;
    rc = lk_db_exec(db, "budget_settle_take", &p, &res);
    if (rc != LK_DB_OK) goto fail;
    if (PQntuples(res) != 1) { /* nothing reserved, or settled before */
        PQclear(res);
        lk_db_rollback(db);
        return LK_DB_OK;
    }
    lk_str_t scope = lk_db_str(res, 0, 0);
    int64_t tokens = lk_db_i64(res, 0, 4), reserved_usd = lk_db_i64(res, 0, 5);
    int64_t real_tokens = prompt_tokens + completion_tokens, real_usd = -1;
    if (!lk_db_is_null(res, 0, 6) && !lk_db_is_null(res, 0, 7)) {
        double in = strtod(PQgetvalue(res, 0, 6), NULL), out = strtod(PQgetvalue(res, 0, 7), NULL);
        /* USD per million tokens x tokens = micro-USD; rounded up: never under-count */
        real_usd = (int64_t)ceil(in * (double)prompt_tokens + out * (double)completion_tokens);
    }
    rc = adjust(db, scope, "tok", lk_db_str(res, 0, 1), real_tokens - tokens);
    if (rc == LK_DB_OK && real_usd >= 0)
        rc = adjust(db, scope, "usd_day", lk_db_str(res, 0, 2), real_usd - reserved_usd);
    if (rc == LK_DB_OK && real_usd >= 0)
        rc = adjust(db, scope, "usd_month", lk_db_str(res, 0, 3), real_usd - reserved_usd);
    PQclear(res);
    if (rc != LK_DB_OK) goto fail;
    rc = lk_db_commit(db);
    if (rc == LK_DB_OK) *microusd = real_usd;
    return rc;
fail:
    lk_db_rollback(db);
    return rc;
}
