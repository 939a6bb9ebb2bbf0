/*  vault_crypto - the vault's cryptography, with no I/O. */
#include "vault_crypto.h"

#include <sodium.h>
#include <string.h>

#define KDF_CONTEXT        "lumkeyv1"
#define SUBKEY_PEPPER      1
#define SUBKEY_KEK_LOCAL_1 2
#define SUBKEY_CHECK       3
#define CHECK_CONSTANT     "lumkey master key check v1"

_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == VAULT_NONCE_LEN, "nonce size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == VAULT_TAG_LEN, "tag size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == VAULT_KEY_LEN, "key size");
_Static_assert(sizeof(KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context size");

vault_keys_t *vault_keys_new(const uint8_t master[VAULT_KEY_LEN])
{
    vault_keys_t *k = sodium_malloc(sizeof *k);
    if (!k) return NULL;
    if (crypto_kdf_derive_from_key(k->pepper, sizeof k->pepper, SUBKEY_PEPPER, KDF_CONTEXT, master) != 0 ||
        crypto_kdf_derive_from_key(k->kek, sizeof k->kek, SUBKEY_KEK_LOCAL_1, KDF_CONTEXT, master) != 0 ||
        crypto_kdf_derive_from_key(k->check, sizeof k->check, SUBKEY_CHECK, KDF_CONTEXT, master) != 0) {
        sodium_free(k);
        return NULL;
    }
    return k;
}

void vault_keys_free(vault_keys_t **keys_p)
{
    if (keys_p && *keys_p) {
        sodium_free(*keys_p); /* wipes */
        *keys_p = NULL;
    }
}

void vault_key_check(const vault_keys_t *keys, char *out)
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, (const uint8_t *)CHECK_CONSTANT, sizeof CHECK_CONSTANT - 1, keys->check,
                       sizeof keys->check);
    sodium_bin2hex(out, VAULT_CHECK_HEX_LEN + 1, h, sizeof h);
}

void vault_hash_key(const uint8_t pepper[VAULT_KEY_LEN], const void *key, size_t len, uint8_t out[32])
{
    crypto_generichash(out, 32, key, len, pepper, VAULT_KEY_LEN);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int put_str(uint8_t *buf, size_t *pos, lk_str_t s)
{
    if (s.len > VAULT_MAX_AD_FIELD) return -1;
    put_u32(buf + *pos, (uint32_t)s.len);
    *pos += 4;
    if (s.len) memcpy(buf + *pos, s.ptr, s.len);
    *pos += s.len;
    return 0;
}

int vault_build_ad(const vault_ad_t *ad, const char *tag, uint8_t *buf, size_t *len)
{
    size_t pos = 0, tl = strlen(tag);
    int cred = strcmp(tag, "lumkey.cred") == 0;
    lk_str_t kek_id = ad->kek_id;
    uint32_t kek_version = ad->kek_version;
    if (cred) { /* see vault_crypto.h */
        kek_id = LK_STR_LIT(VAULT_KEK_ID);
        kek_version = VAULT_KEK_VERSION;
    }
    memcpy(buf, tag, tl);
    pos += tl;
    put_u32(buf + pos, ad->format_version);
    pos += 4;
    if (put_str(buf, &pos, ad->tenant) != 0 || put_str(buf, &pos, ad->cred_id) != 0 ||
        put_str(buf, &pos, ad->provider_id) != 0 || put_str(buf, &pos, kek_id) != 0 ||
        ad->kek_id.len > VAULT_MAX_AD_FIELD)
        return -1;
    put_u32(buf + pos, kek_version);
    pos += 4;
    *len = pos;
    return 0;
}

int vault_seal_secret(const uint8_t *dek, const vault_ad_t *ad, const uint8_t *secret, size_t len,
                      uint8_t nonce[VAULT_NONCE_LEN], uint8_t *ciphertext)
{
    uint8_t cred_ad[VAULT_AD_MAX];
    size_t cred_ad_len;
    unsigned long long clen = 0;
    if (len == 0 || len > VAULT_MAX_SECRET || vault_build_ad(ad, "lumkey.cred", cred_ad, &cred_ad_len) != 0)
        return -1;
    randombytes_buf(nonce, VAULT_NONCE_LEN);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(ciphertext, &clen, secret, len, cred_ad, cred_ad_len, NULL,
                                                   nonce, dek) != 0)
        return -1;
    return clen == len + VAULT_TAG_LEN ? 0 : -1;
}

int vault_open_secret(const uint8_t *dek, const vault_ad_t *ad, const uint8_t *nonce, size_t nonce_len,
                      const uint8_t *ciphertext, size_t ct_len, uint8_t *out, size_t *out_len)
{
    *out_len = 0;
    uint8_t cred_ad[VAULT_AD_MAX];
    size_t cred_ad_len;
    unsigned long long plen = 0;
    if (nonce_len != VAULT_NONCE_LEN || ct_len <= VAULT_TAG_LEN ||
        ct_len > VAULT_MAX_SECRET + VAULT_TAG_LEN ||
        vault_build_ad(ad, "lumkey.cred", cred_ad, &cred_ad_len) != 0)
        return -1;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &plen, NULL, ciphertext, ct_len, cred_ad, cred_ad_len,
                                                   nonce, dek) != 0) {
        sodium_memzero(out, ct_len - VAULT_TAG_LEN);
        return -1;
    }
    *out_len = (size_t)plen;
    return 0;
}

int vault_wrap_local(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *dek,
                     uint8_t wrapped[VAULT_WRAPPED_DEK_LEN])
{
    uint8_t dek_ad[VAULT_AD_MAX];
    size_t dek_ad_len;
    unsigned long long wlen = 0;
    if (vault_build_ad(ad, "lumkey.dek", dek_ad, &dek_ad_len) != 0) return -1;
    randombytes_buf(wrapped, VAULT_NONCE_LEN);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped + VAULT_NONCE_LEN, &wlen, dek, VAULT_KEY_LEN,
                                                   dek_ad, dek_ad_len, NULL, wrapped, kek) != 0)
        return -1;
    return wlen == VAULT_KEY_LEN + VAULT_TAG_LEN ? 0 : -1;
}

int vault_unwrap_local(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *wrapped,
                       size_t wrapped_len, uint8_t *dek)
{
    uint8_t dek_ad[VAULT_AD_MAX];
    size_t dek_ad_len;
    unsigned long long dlen = 0;
    if (wrapped_len != VAULT_WRAPPED_DEK_LEN || vault_build_ad(ad, "lumkey.dek", dek_ad, &dek_ad_len) != 0)
        return -1;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(dek, &dlen, NULL, wrapped + VAULT_NONCE_LEN,
                                                   VAULT_WRAPPED_DEK_LEN - VAULT_NONCE_LEN, dek_ad,
                                                   dek_ad_len, wrapped, kek) != 0 ||
        dlen != VAULT_KEY_LEN) {
        sodium_memzero(dek, VAULT_KEY_LEN);
        return -1;
    }
    return 0;
}

int vault_seal(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *secret, size_t len,
               uint8_t wrapped_dek[VAULT_WRAPPED_DEK_LEN], uint8_t nonce[VAULT_NONCE_LEN],
               uint8_t *ciphertext)
{
    uint8_t *dek = sodium_malloc(VAULT_KEY_LEN);
    if (!dek) return -1;
    crypto_aead_xchacha20poly1305_ietf_keygen(dek);
    int rc = vault_seal_secret(dek, ad, secret, len, nonce, ciphertext) == 0 &&
                     vault_wrap_local(kek, ad, dek, wrapped_dek) == 0
                 ? 0
                 : -1;
    sodium_free(dek); /* wipes */
    return rc;
}

int vault_open(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *wrapped_dek,
               size_t wrapped_len, const uint8_t *nonce, size_t nonce_len, const uint8_t *ciphertext,
               size_t ct_len, uint8_t *out, size_t *out_len)
{
    *out_len = 0;
    uint8_t *dek = sodium_malloc(VAULT_KEY_LEN);
    if (!dek) return -1;
    int rc = vault_unwrap_local(kek, ad, wrapped_dek, wrapped_len, dek) == 0 &&
                     vault_open_secret(dek, ad, nonce, nonce_len, ciphertext, ct_len, out, out_len) == 0
                 ? 0
                 : -1;
    sodium_free(dek);
    return rc;
}
