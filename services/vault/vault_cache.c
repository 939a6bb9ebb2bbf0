/*  vault_cache - CRED_GET without PostgreSQL for a credential used lately. */
#include "vault_cache.h"

#include <stdlib.h>
#include <string.h>

#define KEY_MAX 512

struct vault_cache {
    lk_db_listen_t *listen;
    lk_db_cache_t *rows;
    int64_t max_age_ms;
};

vault_cache_t *vault_cache_new(const char *conninfo, int max_age_ms, size_t slots)
{
    vault_cache_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    if (max_age_ms <= 0) return self; /* off */
    self->max_age_ms = max_age_ms;
    self->listen = lk_db_listen_new(conninfo, "lumkey-vault-listen", "lumkey_cache");
    self->rows = lk_db_cache_new(slots);
    if (!self->listen || !self->rows) vault_cache_destroy(&self);
    return self;
}

void vault_cache_destroy(vault_cache_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_listen_destroy(&(*self_p)->listen);
    lk_db_cache_destroy(&(*self_p)->rows);
    free(*self_p);
    *self_p = NULL;
}

void vault_cache_flush(vault_cache_t *self)
{
    if (self && self->rows) lk_db_cache_flush(self->rows);
}

/* Rows of credentials change with credentials (rotation, rewrap, deletion,
 * also when a provider's deletion cascades) and providers; NULL = maybe missed. */
static void on_change(void *arg, const char *payload)
{
    if (!payload || strcmp(payload, "credentials") == 0 || strcmp(payload, "providers") == 0)
        vault_cache_flush(arg);
}

int vault_cache_sync(vault_cache_t *self)
{
    if (!self || !self->listen) return 0;
    return lk_db_listen_poll(self->listen, on_change, self);
}

/* (id, tenant) as bytes: id length first, so no two pairs meet. 0 if too long. */
static size_t make_key(uint8_t out[KEY_MAX], lk_str_t id, lk_str_t tenant)
{
    size_t len = 2 + id.len + tenant.len;
    if (id.len > 0xffff || len > KEY_MAX) return 0;
    out[0] = (uint8_t)(id.len >> 8);
    out[1] = (uint8_t)id.len;
    if (id.len) memcpy(out + 2, id.ptr, id.len);
    if (tenant.len) memcpy(out + 2 + id.len, tenant.ptr, tenant.len);
    return len;
}

int vault_cache_get(vault_cache_t *self, lk_str_t cred_id, lk_str_t tenant, lk_db_row_t *row)
{
    uint8_t key[KEY_MAX];
    size_t len;
    if (!self || !self->rows || (len = make_key(key, cred_id, tenant)) == 0) return 0;
    return lk_db_cache_get(self->rows, key, len, row);
}

int vault_cache_put(vault_cache_t *self, int store, lk_str_t cred_id, lk_str_t tenant, const PGresult *res,
                    lk_db_row_t *row)
{
    uint8_t key[KEY_MAX];
    size_t len;
    if (!store || !self || !self->rows || (len = make_key(key, cred_id, tenant)) == 0)
        return lk_db_row_of(res, 0, row);
    if (lk_db_cache_put(self->rows, key, len, res, 0, self->max_age_ms * 1000, row) == 0) return 0;
    return lk_db_row_of(res, 0, row);
}

lk_db_cache_stats_t vault_cache_stats(const vault_cache_t *self)
{
    lk_db_cache_stats_t none = {0};
    return self && self->rows ? lk_db_cache_stats(self->rows) : none;
}
