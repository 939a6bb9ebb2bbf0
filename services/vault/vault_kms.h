/*  vault_kms - where the KEK lives: wraps and unwraps data keys (DEKs).
 *
 *  Settings (environment only; read by lumkey-vault at start):
 *      LUMKEY_KMS                     "file" (default) or "pkcs11"
 *      LUMKEY_PKCS11_MODULE           the PKCS#11 module to dlopen, e.g.
 *                                     /usr/lib/softhsm/libsofthsm2.so
 *      LUMKEY_PKCS11_TOKEN            label of the token holding the KEK
 *      LUMKEY_PKCS11_PIN_FILE         file holding the user PIN (never argv,
 *                                     never logged; re-read on every login)
 *      LUMKEY_PKCS11_KEY_LABEL        label of the AES KEK on the token
 *      LUMKEY_PKCS11_KEY_VERSION      its KEK version (default 1)
 *      LUMKEY_PKCS11_OLD_KEY_LABEL    optional: the previous KEK, kept for
 *      LUMKEY_PKCS11_OLD_KEY_VERSION  unwrapping until --rotate-kek is done
 *
 *  Backends. "file": the KEK derived from the master key (kek_id "local",
 *  version 1), behaviour as before. "pkcs11": an AES key on a token, which
 *  must be CKA_SENSITIVE and not CKA_EXTRACTABLE (it never leaves the
 *  token); kek_id "pkcs11:<label>". It wraps with CKM_AES_GCM:
 *      wrapped = iv(12, random) || AES-GCM(DEK) || tag(16)      60 bytes
 *  with the row binding ("lumkey.dek" AD of vault_crypto.h) as AAD. The file
 *  KEK stays available for unwrapping "local" rows in either mode (the master
 *  key also gives the pepper), so rows written before the switch keep working
 *  until rotated; new DEKs are only ever wrapped by the configured KEK, with
 *  no fallback: a KMS that fails is reported as such.
 *
 *  Errors: VAULT_KMS_REFUSED (the data does not open: tampered, another row,
 *  a KEK not configured) vs VAULT_KMS_UNAVAILABLE (module, token, session or
 *  device trouble: the connection is dropped; vault_kms_connect again).
 *  Single-threaded, like the vault. Knows nothing of the database, of
 *  requests or of what a DEK protects.
 */
#ifndef VAULT_KMS_H
#define VAULT_KMS_H

#include <stddef.h>
#include <stdint.h>

#include "vault_crypto.h"

#define VAULT_KMS_GCM_IV_LEN  12
#define VAULT_KMS_WRAPPED_LEN (VAULT_KMS_GCM_IV_LEN + VAULT_KEY_LEN + VAULT_TAG_LEN)
#define VAULT_KMS_ID_MAX      (7 + VAULT_MAX_AD_FIELD)

typedef enum {
    VAULT_KMS_OK = 0,
    VAULT_KMS_REFUSED = -1,
    VAULT_KMS_UNAVAILABLE = -2,
} vault_kms_rc_t;

typedef struct {
    const char *backend; /* "file" (NULL too) or "pkcs11" */
    const char *module, *token, *pin_file, *key_label, *old_key_label;
    uint32_t key_version, old_key_version;
} vault_kms_config_t;

typedef struct vault_kms vault_kms_t;

/* Fills cfg from the environment (strings borrowed from it). -1 (logged) if
 * a setting is malformed. */
int vault_kms_config_env(vault_kms_config_t *cfg);

/* A KMS with file_kek (copied into sodium memory) as the "local" KEK. Does not
 * connect. NULL (logged) if the configuration is incomplete or out of memory. */
vault_kms_t *vault_kms_new(const vault_kms_config_t *cfg, const uint8_t file_kek[VAULT_KEY_LEN]);
/* Disconnects, wipes; NULL-safe; nullifies *kms_p. */
void vault_kms_destroy(vault_kms_t **kms_p);

/* pkcs11: loads the module, finds the token, logs in, finds the key(s) and
 * checks a wrap round trip. file: nothing to do. OK / UNAVAILABLE (logged,
 * without the PIN). */
vault_kms_rc_t vault_kms_connect(vault_kms_t *kms);
void vault_kms_disconnect(vault_kms_t *kms);
int vault_kms_connected(const vault_kms_t *kms);

/* The KEK new DEKs are wrapped with. */
const char *vault_kms_kek_id(const vault_kms_t *kms);
uint32_t vault_kms_kek_version(const vault_kms_t *kms);

/* Wraps dek (VAULT_KEY_LEN) under the current KEK; ad->kek_id / kek_version
 * must name it. wrapped: VAULT_WRAPPED_MAX bytes. */
vault_kms_rc_t vault_kms_wrap(vault_kms_t *kms, const vault_ad_t *ad, const uint8_t *dek, uint8_t *wrapped,
                              size_t *wrapped_len) __attribute__((warn_unused_result));
/* Unwraps with the KEK ad names (current, old or "local") into dek
 * (VAULT_KEY_LEN, sodium memory; wiped on failure). */
vault_kms_rc_t vault_kms_unwrap(vault_kms_t *kms, const vault_ad_t *ad, const uint8_t *wrapped,
                                size_t wrapped_len, uint8_t *dek) __attribute__((warn_unused_result));

#endif
