/*  edge_jwt - OpenID Connect ID-token verification: JWKS parsing and JWT
 *  (JWS compact) verification with OpenSSL EVP.
 *
 *  Accepted: RS256 (RSA keys of at least 2048 bits) and ES256 (P-256). Every
 *  other `alg` — `none`, HS256 (which would turn a public key into an HMAC
 *  secret), RS512, ... — is refused, as are tokens with `crit` headers.
 *  The key is chosen by `kid` (a key of the right type and, when the JWKS
 *  says so, the same `alg` and `use: sig`); without a `kid` only a JWKS with
 *  a single suitable key is usable. Claims checked: `iss` (exact), `aud`
 *  (string or array holding the client id; with several audiences `azp`
 *  must be the client id, and `azp` when present always), `exp`, `iat` and
 *  `nbf` with a small skew, `nonce` (exact). Pure: no I/O, no clock (the
 *  caller passes `now`); fuzzed by tests/fuzz/fuzz_jwt.c.
 */
#ifndef EDGE_JWT_H
#define EDGE_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define EDGE_JWT_MAX_LEN   16384
#define EDGE_JWKS_MAX_LEN  (256 * 1024)
#define EDGE_JWKS_MAX_KEYS 32

typedef struct edge_jwks edge_jwks_t;

typedef enum {
    EDGE_JWT_OK = 0,
    EDGE_JWT_MALFORMED,   /* not three base64url parts of JSON objects, or too long */
    EDGE_JWT_ALG,         /* alg none / HS* / unsupported, or a crit header */
    EDGE_JWT_UNKNOWN_KID, /* no key for this kid (the caller may refresh the JWKS once) */
    EDGE_JWT_SIGNATURE,   /* the signature does not verify */
    EDGE_JWT_ISSUER,
    EDGE_JWT_AUDIENCE,
    EDGE_JWT_AZP,
    EDGE_JWT_EXPIRED,
    EDGE_JWT_NOT_YET, /* iat or nbf in the future */
    EDGE_JWT_NONCE,
} edge_jwt_rc_t;

typedef struct {
    const char *issuer;   /* required */
    const char *audience; /* the client id; required */
    const char *nonce;    /* NULL: not checked */
    int64_t now_s;
    int64_t skew_s; /* e.g. 60 */
} edge_jwt_expect_t;

/* Parses a JWKS document ({"keys":[...]}); keys of unsupported types are
 * skipped. NULL with a message in err when the document is malformed or has
 * no usable key. */
edge_jwks_t *edge_jwks_parse(const char *json, size_t len, char *err, size_t cap);
void edge_jwks_free(edge_jwks_t **jwks_p);
size_t edge_jwks_count(const edge_jwks_t *jwks);

/* Verifies jwt against jwks and x. On EDGE_JWT_OK and claims != NULL,
 * *claims is the payload object (caller decrefs). */
edge_jwt_rc_t edge_jwt_verify(const edge_jwks_t *jwks, const char *jwt, size_t len,
                              const edge_jwt_expect_t *x, json_t **claims);
/* A stable machine code for rc ("bad_signature", "wrong_issuer", ...). */
const char *edge_jwt_rc_code(edge_jwt_rc_t rc);

#endif
