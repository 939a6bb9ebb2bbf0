/*  edge_jwt - JWKS parsing and ID-token verification (see the header). */
#include "edge_jwt.h"

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { KTY_RSA = 1, KTY_EC = 2 } kty_t;

typedef struct {
    char kid[128];
    kty_t kty;
    char alg[16]; /* "" if the JWKS does not say */
    EVP_PKEY *pkey;
} jwk_t;

struct edge_jwks {
    size_t n;
    jwk_t keys[EDGE_JWKS_MAX_KEYS];
};

/* base64url without padding into a new buffer; NULL if malformed or larger than max. */
static uint8_t *b64url_decode(const char *s, size_t len, size_t max, size_t *out_len)
{
    if (len == 0 || len > max * 4 / 3 + 4) return NULL;
    uint8_t *out = malloc(len); /* decoded is shorter */
    if (!out) return NULL;
    const char *end = NULL;
    if (sodium_base642bin(out, len, s, len, NULL, out_len, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) !=
            0 ||
        end != s + len || *out_len > max) {
        free(out);
        return NULL;
    }
    return out;
}

static json_t *b64url_json(const char *s, size_t len)
{
    size_t n = 0;
    uint8_t *raw = b64url_decode(s, len, EDGE_JWT_MAX_LEN, &n);
    if (!raw) return NULL;
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static BIGNUM *b64_bn(json_t *jwk, const char *name, size_t max, size_t *bytes)
{
    const char *v = json_string_value(json_object_get(jwk, name));
    if (!v) return NULL;
    size_t n = 0;
    uint8_t *raw = b64url_decode(v, strlen(v), max, &n);
    if (!raw || n == 0) {
        free(raw);
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
    if (bytes) *bytes = n;
    free(raw);
    return bn;
}

static EVP_PKEY *rsa_key(json_t *jwk)
{
    size_t nbytes = 0;
    BIGNUM *n = b64_bn(jwk, "n", 1024, &nbytes), *e = b64_bn(jwk, "e", 8, NULL);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    if (!n || !e || BN_num_bits(n) < 2048 || BN_num_bits(n) > 8192) goto done;
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || !(params = OSSL_PARAM_BLD_to_param(bld)))
        goto done;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

static EVP_PKEY *ec_key(json_t *jwk)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *xs = json_string_value(json_object_get(jwk, "x"));
    const char *ys = json_string_value(json_object_get(jwk, "y"));
    if (!crv || strcmp(crv, "P-256") != 0 || !xs || !ys) return NULL;
    size_t xl = 0, yl = 0;
    uint8_t *x = b64url_decode(xs, strlen(xs), 32, &xl), *y = b64url_decode(ys, strlen(ys), 32, &yl);
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL, *chk = NULL;
    if (!x || !y || xl != 32 || yl != 32) goto done;
    uint8_t pt[65];
    pt[0] = 0x04;
    memcpy(pt + 1, x, 32);
    memcpy(pt + 33, y, 32);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt),
        OSSL_PARAM_construct_end(),
    };
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        pkey = NULL;
        goto done;
    }
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!chk || EVP_PKEY_public_check(chk) != 1) { /* the point must be on the curve */
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
done:
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_CTX_free(ctx);
    free(x);
    free(y);
    return pkey;
}

edge_jwks_t *edge_jwks_parse(const char *json, size_t len, char *err, size_t cap)
{
    if (!json || len == 0 || len > EDGE_JWKS_MAX_LEN) {
        snprintf(err, cap, "the JWKS document is empty or too large");
        return NULL;
    }
    json_t *doc = json_loadb(json, len, 0, NULL);
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        json_decref(doc);
        snprintf(err, cap, "the JWKS document has no `keys` array");
        return NULL;
    }
    edge_jwks_t *jwks = calloc(1, sizeof *jwks);
    if (!jwks) {
        json_decref(doc);
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (jwks->n == EDGE_JWKS_MAX_KEYS) break;
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *alg = json_string_value(json_object_get(k, "alg"));
        const char *use = json_string_value(json_object_get(k, "use"));
        if (!kty || (use && strcmp(use, "sig") != 0)) continue;
        if ((kid && strlen(kid) >= sizeof jwks->keys[0].kid) ||
            (alg && strlen(alg) >= sizeof jwks->keys[0].alg))
            continue;
        jwk_t *j = &jwks->keys[jwks->n];
        if (strcmp(kty, "RSA") == 0) {
            j->kty = KTY_RSA;
            j->pkey = rsa_key(k);
        } else if (strcmp(kty, "EC") == 0) {
            j->kty = KTY_EC;
            j->pkey = ec_key(k);
        }
        if (!j->pkey) continue;
        snprintf(j->kid, sizeof j->kid, "%s", kid ? kid : "");
        snprintf(j->alg, sizeof j->alg, "%s", alg ? alg : "");
        jwks->n++;
    }
    json_decref(doc);
    if (jwks->n == 0) {
        edge_jwks_free(&jwks);
        snprintf(err, cap, "the JWKS document has no usable RS256 / ES256 key");
        return NULL;
    }
    return jwks;
}

void edge_jwks_free(edge_jwks_t **jwks_p)
{
    if (!jwks_p || !*jwks_p) return;
    for (size_t i = 0; i < (*jwks_p)->n; i++)
        EVP_PKEY_free((*jwks_p)->keys[i].pkey);
    free(*jwks_p);
    *jwks_p = NULL;
}

size_t edge_jwks_count(const edge_jwks_t *jwks)
{
    return jwks ? jwks->n : 0;
}

static const jwk_t *find_key(const edge_jwks_t *jwks, const char *kid, kty_t kty, const char *alg)
{
    const jwk_t *only = NULL;
    size_t usable = 0;
    for (size_t i = 0; i < jwks->n; i++) {
        const jwk_t *k = &jwks->keys[i];
        if (k->kty != kty || (k->alg[0] && strcmp(k->alg, alg) != 0)) continue;
        if (kid && strcmp(k->kid, kid) == 0) return k;
        usable++;
        only = k;
    }
    return !kid && usable == 1 ? only : NULL;
}

static int verify_sig(const jwk_t *k, const char *input, size_t input_len, const uint8_t *sig, size_t sig_len)
{
    uint8_t *der = NULL;
    int der_len = 0, ok = 0;
    if (k->kty == KTY_EC) { /* JWS: r || s, 32 bytes each; OpenSSL wants DER */
        if (sig_len != 64) return 0;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return 0;
        }
        der_len = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (der_len <= 0) return 0;
        sig = der;
        sig_len = (size_t)der_len;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
        EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input, input_len) == 1)
        ok = 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return ok;
}

static int num_claim(json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != d || d > 9e15 || d < -9e15) return -1;
        *out = (int64_t)d;
        return 1;
    }
    return v ? -1 : 0;
}

edge_jwt_rc_t edge_jwt_verify(const edge_jwks_t *jwks, const char *jwt, size_t len,
                              const edge_jwt_expect_t *x, json_t **claims_out)
{
    if (claims_out) *claims_out = NULL;
    if (!jwks || !jwt || len == 0 || len > EDGE_JWT_MAX_LEN || !x || !x->issuer || !x->audience)
        return EDGE_JWT_MALFORMED;
    const char *d1 = memchr(jwt, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - jwt)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - jwt))) return EDGE_JWT_MALFORMED;
    json_t *hdr = b64url_json(jwt, (size_t)(d1 - jwt));
    if (!hdr) return EDGE_JWT_MALFORMED;
    edge_jwt_rc_t rc = EDGE_JWT_MALFORMED;
    json_t *claims = NULL;
    uint8_t *sig = NULL;
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    json_t *jkid = json_object_get(hdr, "kid");
    if (jkid && !json_is_string(jkid)) goto done;
    const char *kid = json_string_value(jkid);
    kty_t kty;
    if (!alg || json_object_get(hdr, "crit")) {
        rc = EDGE_JWT_ALG;
        goto done;
    }
    if (strcmp(alg, "RS256") == 0)
        kty = KTY_RSA;
    else if (strcmp(alg, "ES256") == 0)
        kty = KTY_EC;
    else {
        rc = EDGE_JWT_ALG; /* none, HS256, ...: never */
        goto done;
    }
    claims = b64url_json(d1 + 1, (size_t)(d2 - d1 - 1));
    size_t sig_len = 0;
    sig = b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - jwt), 1024, &sig_len);
    if (!claims) goto done; /* MALFORMED */
    if (!sig) {             /* an empty signature does not verify; a non-base64url one is malformed */
        rc = d2 + 1 < jwt + len ? EDGE_JWT_MALFORMED : EDGE_JWT_SIGNATURE;
        goto done;
    }
    const jwk_t *key = find_key(jwks, kid, kty, alg);
    if (!key) {
        rc = EDGE_JWT_UNKNOWN_KID;
        goto done;
    }
    if (!verify_sig(key, jwt, (size_t)(d2 - jwt), sig, sig_len)) {
        rc = EDGE_JWT_SIGNATURE;
        goto done;
    }
    /* the signature holds: now the claims */
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || strcmp(iss, x->issuer) != 0) {
        rc = EDGE_JWT_ISSUER;
        goto done;
    }
    json_t *aud = json_object_get(claims, "aud");
    size_t n_aud = 0;
    int aud_ok = 0;
    if (json_is_string(aud)) {
        n_aud = 1;
        aud_ok = strcmp(json_string_value(aud), x->audience) == 0;
    } else if (json_is_array(aud)) {
        size_t i;
        json_t *a;
        json_array_foreach(aud, i, a)
        {
            n_aud++;
            if (json_is_string(a) && strcmp(json_string_value(a), x->audience) == 0) aud_ok = 1;
        }
    }
    if (!aud_ok) {
        rc = EDGE_JWT_AUDIENCE;
        goto done;
    }
    json_t *azp = json_object_get(claims, "azp");
    if ((azp || n_aud > 1) && !(json_is_string(azp) && strcmp(json_string_value(azp), x->audience) == 0)) {
        rc = EDGE_JWT_AZP;
        goto done;
    }
    int64_t exp = 0, iat = 0, nbf = 0;
    int has_exp = num_claim(claims, "exp", &exp), has_iat = num_claim(claims, "iat", &iat),
        has_nbf = num_claim(claims, "nbf", &nbf);
    if (has_exp != 1 || has_iat != 1 || has_nbf < 0) {
        rc = EDGE_JWT_MALFORMED;
        goto done;
    }
    if (x->now_s >= exp + x->skew_s) {
        rc = EDGE_JWT_EXPIRED;
        goto done;
    }
    if (iat > x->now_s + x->skew_s || (has_nbf == 1 && nbf > x->now_s + x->skew_s)) {
        rc = EDGE_JWT_NOT_YET;
        goto done;
    }
    if (x->nonce) {
        const char *nonce = json_string_value(json_object_get(claims, "nonce"));
        if (!nonce || strlen(nonce) != strlen(x->nonce) ||
            sodium_memcmp(nonce, x->nonce, strlen(x->nonce)) != 0) {
            rc = EDGE_JWT_NONCE;
            goto done;
        }
    }
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    if (!sub || !*sub) {
        rc = EDGE_JWT_MALFORMED;
        goto done;
    }
    rc = EDGE_JWT_OK;
    if (claims_out) {
        *claims_out = claims;
        claims = NULL;
    }
done:
    free(sig);
    json_decref(claims);
    json_decref(hdr);
    return rc;
}

const char *edge_jwt_rc_code(edge_jwt_rc_t rc)
{
    switch (rc) {
    case EDGE_JWT_OK:
        return "ok";
    case EDGE_JWT_MALFORMED:
        return "malformed_token";
    case EDGE_JWT_ALG:
        return "unsupported_alg";
    case EDGE_JWT_UNKNOWN_KID:
        return "unknown_key";
    case EDGE_JWT_SIGNATURE:
        return "bad_signature";
    case EDGE_JWT_ISSUER:
        return "wrong_issuer";
    case EDGE_JWT_AUDIENCE:
        return "wrong_audience";
    case EDGE_JWT_AZP:
        return "wrong_azp";
    case EDGE_JWT_EXPIRED:
        return "token_expired";
    case EDGE_JWT_NOT_YET:
        return "token_not_yet_valid";
    case EDGE_JWT_NONCE:
        return "wrong_nonce";
    }
    return "invalid_token";
}
