/*  vault - lumkey-vault's service object: master key, sealed state, and the
 *  handlers for KEY_HASH, ADMIN_AUTH, CRED_GET and the keys.* / providers.*
 *  admin operations.
 *
 *  The vault is SEALED when the master key is missing, unreadable or does not
 *  match the database's key-check value: every request is then answered
 *  ERROR UNAVAILABLE "vault is sealed", with no fallback of any kind. With a
 *  key but no database yet, the key check is retried on every request and
 *  tick (requests get UNAVAILABLE meanwhile).
 *
 *  Only this service holds the pepper and the KEK, and only it turns a
 *  credentials row into a usable secret. Knows nothing of sockets (lk_worker
 *  calls vault_handle) or of HTTP.
 */
#ifndef VAULT_H
#define VAULT_H

#include "lk_buf.h"
#include "lk_db.h"
#include "lk_proto.h"
#include "vault_crypto.h"

typedef enum {
    VAULT_SEALED_NO_KEY = 0, /* no usable master key file */
    VAULT_SEALED_MISMATCH,   /* the key does not match this database */
    VAULT_UNVERIFIED,        /* key loaded, database not reached yet */
    VAULT_UNSEALED,
} vault_state_t;

typedef struct {
    const char *conninfo;        /* LUMKEY_DB */
    const char *master_key_file; /* LUMKEY_MASTER_KEY_FILE; NULL = sealed */
    int db_wait_ms;              /* how long to wait for the database at start */
    int statement_timeout_ms;
} vault_config_t;

typedef struct {
    lk_db_t *db;
    vault_keys_t *keys; /* sodium memory; NULL when sealed for want of a key */
    vault_state_t state;
} vault_t;

/* Builds the vault: loads the master key (or starts sealed), connects, checks
 * the key. NULL only when out of memory. */
vault_t *vault_new(const vault_config_t *cfg);
/* Wipes the keys; NULL-safe; nullifies *self_p. */
void vault_destroy(vault_t **self_p);

/* lk_worker handler and tick. */
int vault_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);
void vault_tick(void *ctx);

/* --bootstrap-admin: exit status 0 (token printed on stdout), 3 (the tenant
 * already has an admin token), 1 (failure), 4 (created but stdout failed). */
int vault_bootstrap_admin(vault_t *self, const char *tenant);

/* --init-master-key: creates path (mode 0600) with a fresh key if absent.
 * Exit status 0 / 1. */
int vault_init_master_key(const char *path);

/* vault_admin.c: statements and the ADMIN_REQ handler. */
int vault_admin_prepare(lk_db_t *db) __attribute__((warn_unused_result));
int vault_admin_handle(vault_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch);
/* Makes jansson wipe what it frees (admin bodies hold secrets). Call once at start. */
void vault_admin_init_json(void);

/* Random id: prefix + 20 base62 characters. out: >= strlen(prefix) + 21. */
void vault_new_id(char *out, const char *prefix);

/* ------------------------------------------------------------------ KMS --
 * The KEK sits behind vault_kms (file or PKCS#11; settings in vault_kms.h).
 * A KMS that is unreachable at start keeps the vault sealed (retried every
 * 2 s); one that fails mid-run reseals it until it reconnects. */
#include "vault_kms.h"

/* vault_new with the KEK behind the KMS kcfg describes. */
vault_t *vault_new_kms(const vault_config_t *cfg, const vault_kms_config_t *kcfg);

/* Seals secret for the row ad names under a fresh DEK wrapped by the current
 * KEK; sets ad->kek_id (borrowed from the vault) and ad->kek_version, which
 * the row must record. wrapped: VAULT_WRAPPED_MAX bytes; ciphertext: len +
 * VAULT_TAG_LEN. UNAVAILABLE reseals the vault (answer "vault is sealed"). */
vault_kms_rc_t vault_cred_seal(vault_t *self, vault_ad_t *ad, const uint8_t *secret, size_t len,
                               uint8_t *wrapped, size_t *wrapped_len, uint8_t nonce[VAULT_NONCE_LEN],
                               uint8_t *ciphertext) __attribute__((warn_unused_result));
/* Opens a credentials row (ad from the row) into out (room for ct_len -
 * VAULT_TAG_LEN). UNAVAILABLE reseals the vault. */
vault_kms_rc_t vault_cred_open(vault_t *self, const vault_ad_t *ad, const uint8_t *wrapped,
                               size_t wrapped_len, const uint8_t *nonce, size_t nonce_len,
                               const uint8_t *ciphertext, size_t ct_len, uint8_t *out, size_t *out_len)
    __attribute__((warn_unused_result));

/* --rotate-kek: rewraps every credential's DEK under the current KEK, one
 * transaction per row, leaving the secret's ciphertext as it is; progress on
 * stderr. Exit status 0 (all current), 1 (some row or the vault failed). */
int vault_rotate_kek(vault_t *self);

#endif
