/*  vault_crypto - the vault's cryptography, with no I/O: key derivation,
 *  keyed key hashes, and envelope encryption of provider credentials.
 *
 *  From the 32-byte master key, crypto_kdf derives (context "lumkeyv1"):
 *      1  the pepper of key and admin-token hashes (keyed BLAKE2b-256)
 *      2  the KEK "local" version 1, which wraps data keys
 *      3  the key-check key: a keyed hash of a constant under it is stored in
 *         the database, so a wrong master key is noticed at start
 *
 *  Envelope: a fresh random DEK per credential seals the secret with
 *  XChaCha20-Poly1305-IETF; the KEK (here the file KEK, or a KMS key, see
 *  vault_kms.h) wraps the DEK. Both take as additional data the canonical
 *  encoding of the row binding
 *      domain tag ("lumkey.cred" or "lumkey.dek"), format version,
 *      tenant id, credential id, provider id, KEK id, KEK version
 *  (integers as 4 bytes big-endian, strings as 4-byte big-endian length +
 *  bytes), so a ciphertext or a wrapped DEK moved to another row, tenant,
 *  provider or KEK fails to open. The DEK only ever lives in sodium memory.
 *  KEK rotation rewraps the DEK and leaves the secret's ciphertext alone, so
 *  the secret's binding must not change with the row's KEK: its KEK fields
 *  are always "local" 1 (what every row was first written with before KEKs
 *  could change; a constant, so it binds nothing), whatever KEK the row names
 *  now. The DEK's binding names the row's current KEK.
 *
 *      wrapped_dek = nonce(24) || AEAD_KEK(DEK)        72 bytes
 *      nonce       = 24 random bytes
 *      ciphertext  = AEAD_DEK(secret)                  secret + 16 bytes
 */
#ifndef VAULT_CRYPTO_H
#define VAULT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "lk_str.h"

#define VAULT_KEY_LEN         32
#define VAULT_NONCE_LEN       24
#define VAULT_TAG_LEN         16
#define VAULT_WRAPPED_DEK_LEN (VAULT_NONCE_LEN + VAULT_KEY_LEN + VAULT_TAG_LEN)
#define VAULT_FORMAT_VERSION  1
#define VAULT_WRAPPED_MAX     128 /* any KEK's wrapped DEK */
#define VAULT_AD_MAX          (16 + 4 + 4 * (4 + VAULT_MAX_AD_FIELD) + 4)
#define VAULT_KEK_ID          "local"
#define VAULT_KEK_VERSION     1
#define VAULT_MAX_SECRET      4096
#define VAULT_MAX_AD_FIELD    256
#define VAULT_CHECK_HEX_LEN   64

/* Derived keys; allocate with vault_keys_new (sodium memory). */
typedef struct {
    uint8_t pepper[VAULT_KEY_LEN];
    uint8_t kek[VAULT_KEY_LEN];
    uint8_t check[VAULT_KEY_LEN];
} vault_keys_t;

/* What the ciphertext is bound to. */
typedef struct {
    uint32_t format_version;
    lk_str_t tenant;
    lk_str_t cred_id;
    lk_str_t provider_id;
    lk_str_t kek_id;
    uint32_t kek_version;
} vault_ad_t;

/* Derives the keys from master (32 bytes) into fresh sodium memory. NULL on
 * failure. Caller frees with vault_keys_free. */
vault_keys_t *vault_keys_new(const uint8_t master[VAULT_KEY_LEN]);
/* Wipes and frees; NULL-safe; nullifies *keys_p. */
void vault_keys_free(vault_keys_t **keys_p);

/* The key-check value: hex of a keyed hash of a constant (reveals nothing
 * about the key). out: VAULT_CHECK_HEX_LEN + 1 bytes. */
void vault_key_check(const vault_keys_t *keys, char *out);

/* Keyed BLAKE2b-256 of a key or admin token with the pepper. */
void vault_hash_key(const uint8_t pepper[VAULT_KEY_LEN], const void *key, size_t len, uint8_t out[32]);

/* Seals secret[0..len) (1..VAULT_MAX_SECRET bytes) under a fresh DEK wrapped
 * by kek. ciphertext must have room for len + VAULT_TAG_LEN. 0 / -1. */
int vault_seal(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *secret, size_t len,
               uint8_t wrapped_dek[VAULT_WRAPPED_DEK_LEN], uint8_t nonce[VAULT_NONCE_LEN],
               uint8_t *ciphertext) __attribute__((warn_unused_result));

/* Opens a sealed secret into out (room for ct_len - VAULT_TAG_LEN; put it in
 * sodium memory). Any mismatch (wrong sizes, a flipped byte, another row's
 * AD, another KEK) fails. 0 / -1; on failure out is wiped. */
int vault_open(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *wrapped_dek,
               size_t wrapped_len, const uint8_t *nonce, size_t nonce_len, const uint8_t *ciphertext,
               size_t ct_len, uint8_t *out, size_t *out_len) __attribute__((warn_unused_result));

/* The pieces of vault_seal / vault_open, for a KEK held elsewhere (vault_kms).
 * vault_build_ad: the canonical binding for tag "lumkey.cred" or "lumkey.dek"
 * (buf: VAULT_AD_MAX bytes); -1 if a field is too long or the format unknown. */
int vault_build_ad(const vault_ad_t *ad, const char *tag, uint8_t *buf, size_t *len)
    __attribute__((warn_unused_result));
/* Seals / opens the secret under dek (VAULT_KEY_LEN); same rules as above. */
int vault_seal_secret(const uint8_t *dek, const vault_ad_t *ad, const uint8_t *secret, size_t len,
                      uint8_t nonce[VAULT_NONCE_LEN], uint8_t *ciphertext)
    __attribute__((warn_unused_result));
int vault_open_secret(const uint8_t *dek, const vault_ad_t *ad, const uint8_t *nonce, size_t nonce_len,
                      const uint8_t *ciphertext, size_t ct_len, uint8_t *out, size_t *out_len)
    __attribute__((warn_unused_result));
/* Wraps / unwraps a DEK under a 32-byte local KEK (the file KEK):
 * VAULT_WRAPPED_DEK_LEN bytes. The unwrapped DEK goes to dek (sodium memory). */
int vault_wrap_local(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *dek,
                     uint8_t wrapped[VAULT_WRAPPED_DEK_LEN]) __attribute__((warn_unused_result));
int vault_unwrap_local(const uint8_t kek[VAULT_KEY_LEN], const vault_ad_t *ad, const uint8_t *wrapped,
                       size_t wrapped_len, uint8_t *dek) __attribute__((warn_unused_result));

#endif
