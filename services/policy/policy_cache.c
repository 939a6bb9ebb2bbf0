/*  policy_cache - the DECIDE lookup without PostgreSQL for a key seen lately. */
#include "policy_cache.h"

#include <stdlib.h>
#include <string.h>

#include "lk_log.h"

struct policy_cache {
    lk_db_listen_t *listen;
    lk_db_cache_t *rows;
    int64_t max_age_ms;
};

policy_cache_t *policy_cache_new(const char *conninfo, int max_age_ms, size_t slots)
{
    policy_cache_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    if (max_age_ms <= 0) return self; /* off */
    self->max_age_ms = max_age_ms;
    self->listen = lk_db_listen_new(conninfo, "lumkey-policy-listen", "lumkey_cache");
    self->rows = lk_db_cache_new(slots);
    if (!self->listen || !self->rows) policy_cache_destroy(&self);
    return self;
}

void policy_cache_destroy(policy_cache_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_listen_destroy(&(*self_p)->listen);
    lk_db_cache_destroy(&(*self_p)->rows);
    free(*self_p);
    *self_p = NULL;
}

/* Every table that feeds DECIDE notifies, and DECIDE's row joins them all:
 * any change (or a possibly missed one: payload NULL) drops everything. */
static void on_change(void *arg, const char *payload)
{
    policy_cache_t *self = arg;
    (void)payload;
    lk_db_cache_flush(self->rows);
}

int policy_cache_sync(policy_cache_t *self)
{
    if (!self || !self->listen) return 0;
    return lk_db_listen_poll(self->listen, on_change, self);
}

size_t policy_cache_key(uint8_t out[POLICY_CACHE_KEY_MAX], const uint8_t *key_hash, size_t hash_len,
                        lk_str_t model, const char *ip)
{
    size_t ip_len = ip ? strlen(ip) : 0;
    size_t len = 1 + hash_len + 2 + model.len + 1 + ip_len;
    if (hash_len > 64 || model.len > 0xffff || len > POLICY_CACHE_KEY_MAX) return 0;
    uint8_t *p = out;
    *p++ = (uint8_t)hash_len;
    memcpy(p, key_hash, hash_len);
    p += hash_len;
    *p++ = (uint8_t)(model.len >> 8);
    *p++ = (uint8_t)model.len;
    if (model.len) memcpy(p, model.ptr, model.len);
    p += model.len;
    *p++ = ip ? 1 : 0; /* no address is not the empty address */
    if (ip_len) memcpy(p, ip, ip_len);
    return len;
}

int policy_cache_get(policy_cache_t *self, const uint8_t *key, size_t len, lk_db_row_t *row)
{
    if (!self || !self->rows || len == 0) return 0;
    return lk_db_cache_get(self->rows, key, len, row);
}

int policy_cache_put(policy_cache_t *self, const uint8_t *key, size_t len, const PGresult *res,
                     int64_t ttl_ms, lk_db_row_t *row)
{
    if (!self || !self->rows || len == 0 || ttl_ms <= 0) return lk_db_row_of(res, 0, row);
    if (ttl_ms > self->max_age_ms) ttl_ms = self->max_age_ms;
    if (lk_db_cache_put(self->rows, key, len, res, 0, ttl_ms * 1000, row) == 0) return 0;
    return lk_db_row_of(res, 0, row);
}

int64_t policy_cache_max_age_ms(const policy_cache_t *self)
{
    return self ? self->max_age_ms : 0;
}

lk_db_cache_stats_t policy_cache_stats(const policy_cache_t *self)
{
    lk_db_cache_stats_t none = {0};
    return self && self->rows ? lk_db_cache_stats(self->rows) : none;
}
