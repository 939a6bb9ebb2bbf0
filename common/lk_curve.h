/*  lk_curve - CURVE keys for the tcp:// links between the edge and the workers.
 *
 *  Workers are CURVE servers, edges CURVE clients. Keys are CZMQ zcert files:
 *  `NAME` holds the public key, `NAME_secret` the public and the secret key
 *  (mode 0600). Settings:
 *
 *      LUMKEY_CURVE_SECRET_FILE         this process's own keypair (NAME_secret);
 *                                       workers share the "server" keypair,
 *                                       each edge has its own client keypair
 *      LUMKEY_CURVE_SERVER_PUBLIC_FILE  edge: the workers' public key file
 *      LUMKEY_CURVE_CLIENTS_DIR         worker: the public key files of the
 *                                       clients it admits (re-read when the
 *                                       folder changes); any other key is refused
 *      LUMKEY_CURVE_INSECURE_TCP=1      allow tcp:// without CURVE (tests only)
 *
 *  With LUMKEY_CURVE_SECRET_FILE unset CURVE is off: fine for ipc://, and a
 *  tcp:// endpoint is refused unless LUMKEY_CURVE_INSECURE_TCP=1. Secret keys
 *  live in sodium memory and are wiped by lk_curve_clear. Knows nothing of the
 *  protocol; the ZAP handler that asks lk_curve_admits lives in lk_worker.
 */
#ifndef LK_CURVE_H
#define LK_CURVE_H

#include <stddef.h>
#include <stdint.h>

#define LK_CURVE_KEY_TXT 41 /* Z85 text of a 32-byte key + NUL */

typedef struct {
    int on;
    char public_txt[LK_CURVE_KEY_TXT];
    char *secret_txt;                  /* sodium memory, LK_CURVE_KEY_TXT bytes */
    char server_txt[LK_CURVE_KEY_TXT]; /* client: the server's public key */
    void *clients;                     /* server: zcertstore_t *, the admitted clients */
} lk_curve_t;

/* Server side for a worker that binds endpoint. 0 / -1 (logged). */
int lk_curve_server_load(lk_curve_t *self, const char *endpoint) __attribute__((warn_unused_result));

/* Client side for an edge; endpoints is its whole endpoint list (to check
 * that tcp:// links are covered). 0 / -1 (logged). */
int lk_curve_client_load(lk_curve_t *self, const char *endpoints) __attribute__((warn_unused_result));

/* Makes a ZeroMQ socket a CURVE server / client (before bind / connect).
 * Nothing when CURVE is off. 0 / -1. */
int lk_curve_server_apply(const lk_curve_t *self, void *zsock) __attribute__((warn_unused_result));
int lk_curve_client_apply(const lk_curve_t *self, void *zsock) __attribute__((warn_unused_result));

/* Whether a client's 32-byte public key is admitted: listed in the clients
 * folder, or the server's own key (used by --health). */
int lk_curve_admits(lk_curve_t *self, const uint8_t *key, size_t len);

/* Wipes the secret key, frees the store. NULL-safe, idempotent. */
void lk_curve_clear(lk_curve_t *self);

/* Writes a new keypair: path (public, 0644) and path_secret (0600). 0 / -1. */
int lk_curve_keygen(const char *path) __attribute__((warn_unused_result));

#endif
