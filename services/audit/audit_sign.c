/*  audit_sign - the Ed25519 key that signs audit checkpoints. */
#include "audit_sign.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lk_log.h"

struct audit_sign {
    unsigned char *sk; /* sodium_malloc: 64 bytes (seed || pk) */
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    char pk_hex[2 * crypto_sign_PUBLICKEYBYTES + 1];
    char key_id[17];
};

static int write_new_key(const char *path)
{
    unsigned char seed[crypto_sign_SEEDBYTES];
    char hex[2 * crypto_sign_SEEDBYTES + 2];
    randombytes_buf(seed, sizeof seed);
    sodium_bin2hex(hex, sizeof hex, seed, sizeof seed);
    sodium_memzero(seed, sizeof seed);
    size_t n = strlen(hex);
    hex[n++] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        sodium_memzero(hex, sizeof hex);
        if (errno == EEXIST) return 0; /* another replica made it first */
        lk_log_error("cannot create the audit signing key file: %s", strerror(errno));
        return -1;
    }
    ssize_t w = write(fd, hex, n);
    sodium_memzero(hex, sizeof hex);
    if (w != (ssize_t)n || fsync(fd) != 0 || close(fd) != 0) {
        lk_log_error("cannot write the audit signing key file");
        return -1;
    }
    lk_log_info("created a new audit signing key");
    return 0;
}

audit_sign_t *audit_sign_open(const char *path, int create)
{
    if (!path || !*path) {
        lk_log_error("no audit signing key file (LUMKEY_AUDIT_SIGNING_KEY_FILE)");
        return NULL;
    }
    if (create && access(path, F_OK) != 0 && write_new_key(path) != 0) return NULL;
    audit_sign_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    char *hex = sodium_malloc(256);
    unsigned char *seed = sodium_malloc(crypto_sign_SEEDBYTES);
    int ok = 0;
    FILE *f = NULL;
    if (!self->sk || !hex || !seed) goto done;
    f = fopen(path, "r");
    if (!f) {
        lk_log_error("cannot open the audit signing key file: %s", strerror(errno));
        goto done;
    }
    size_t n = fread(hex, 1, 255, f);
    hex[n] = '\0';
    while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r' || hex[n - 1] == ' '))
        hex[--n] = '\0';
    size_t got = 0;
    if (sodium_hex2bin(seed, crypto_sign_SEEDBYTES, hex, n, NULL, &got, NULL) != 0 ||
        got != crypto_sign_SEEDBYTES) {
        lk_log_error("the audit signing key file does not hold 64 hex characters");
        goto done;
    }
    if (crypto_sign_seed_keypair(self->pk, self->sk, seed) != 0) goto done;
    sodium_bin2hex(self->pk_hex, sizeof self->pk_hex, self->pk, sizeof self->pk);
    memcpy(self->key_id, self->pk_hex, 16);
    self->key_id[16] = '\0';
    ok = 1;
done:
    if (f) fclose(f);
    if (hex) sodium_free(hex);
    if (seed) sodium_free(seed);
    if (!ok) audit_sign_destroy(&self);
    return self;
}

void audit_sign_destroy(audit_sign_t **self_p)
{
    if (!self_p || !*self_p) return;
    if ((*self_p)->sk) sodium_free((*self_p)->sk);
    free(*self_p);
    *self_p = NULL;
}

const char *audit_sign_public_hex(const audit_sign_t *self)
{
    return self->pk_hex;
}
const char *audit_sign_key_id(const audit_sign_t *self)
{
    return self->key_id;
}

size_t audit_sign_message(char *buf, size_t cap, const char *chain, int64_t seq, const uint8_t hash[32],
                          int64_t signed_at_ms)
{
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, hash, 32);
    int n = snprintf(buf, cap, "lumkey-audit-checkpoint-v1\n%s\n%" PRId64 "\n%s\n%" PRId64, chain, seq, hex,
                     signed_at_ms);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

void audit_sign_sign(const audit_sign_t *self, const char *msg, size_t len, uint8_t sig[64])
{
    crypto_sign_detached(sig, NULL, (const unsigned char *)msg, len, self->sk);
}

int audit_sign_verify(const audit_sign_t *self, const char *msg, size_t len, const uint8_t *sig,
                      size_t siglen)
{
    return siglen == crypto_sign_BYTES &&
           crypto_sign_verify_detached(sig, (const unsigned char *)msg, len, self->pk) == 0;
}
