/*  vault_cache - the CRED_GET cache's key and invalidating tables (vault_cache.h). */
#include "vault_cache.h"

#include <string.h>

/* Rows of credentials change with credentials (rotation, rewrap, deletion,
 * also when a provider's deletion cascades) and providers. */
const char *const vault_cache_tables[] = {"credentials", "providers", NULL};

/* (id, tenant) as bytes: id length first, so no two pairs meet. 0 if too long. */
size_t vault_cache_key(uint8_t out[VAULT_CACHE_KEY_MAX], lk_str_t id, lk_str_t tenant)
{
    size_t len = 2 + id.len + tenant.len;
    if (id.len > 0xffff || len > VAULT_CACHE_KEY_MAX) return 0;
    out[0] = (uint8_t)(id.len >> 8);
    out[1] = (uint8_t)id.len;
    if (id.len) memcpy(out + 2, id.ptr, id.len);
    if (tenant.len) memcpy(out + 2 + id.len, tenant.ptr, tenant.len);
    return len;
}
