/*  audit_sign - the Ed25519 key that signs audit checkpoints.
 *
 *  The secret key lives in a file (hex of the 32-byte seed, mode 0600) named
 *  by LUMKEY_AUDIT_SIGNING_KEY_FILE, created at first start if missing (or by
 *  `lumkey-audit --init-signing-key FILE`). The key is held in sodium_malloc
 *  memory and wiped on destroy. The public key is exported (hex) by the status
 *  op and `lumkey-audit --print-public-key`. Knows nothing of the database.
 *
 *  Checkpoint message (what is signed):
 *      "lumkey-audit-checkpoint-v1\n" chain "\n" chain_seq "\n" hex(row_hash) "\n" signed_at_ms
 */
#ifndef AUDIT_SIGN_H
#define AUDIT_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_SIGN_MSG_MAX 512

typedef struct audit_sign audit_sign_t;

/* Loads the key in path, creating it first when create is set and it does not
 * exist. NULL on failure (logged). */
audit_sign_t *audit_sign_open(const char *path, int create);
void audit_sign_destroy(audit_sign_t **self_p);

/* Hex public key (64 chars + NUL), and its short id (first 16 hex). Borrowed. */
const char *audit_sign_public_hex(const audit_sign_t *self);
const char *audit_sign_key_id(const audit_sign_t *self);

/* Builds the checkpoint message into buf; returns its length. */
size_t audit_sign_message(char *buf, size_t cap, const char *chain, int64_t seq, const uint8_t hash[32],
                          int64_t signed_at_ms);
/* 64-byte detached signature of msg. */
void audit_sign_sign(const audit_sign_t *self, const char *msg, size_t len, uint8_t sig[64]);
/* 1 when sig is a valid signature of msg under this key. */
int audit_sign_verify(const audit_sign_t *self, const char *msg, size_t len, const uint8_t *sig,
                      size_t siglen);

#endif
