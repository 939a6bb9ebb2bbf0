/*  policy_cache - the DECIDE cache's key (policy_cache.h). */
#include "policy_cache.h"

#include <string.h>

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
